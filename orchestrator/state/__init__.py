"""Everything the runtime keeps in Redis: key names, run records and their transitions, the
finalize due-queue, pending events, history streams, metrics, task messages and the Lua
scripts. Knows nothing of rotators or ScaiVault."""
