"""A local stack for trials, plugin authors and tests: the demo, the sandbox, process
supervision, the ScaiVault emulator and a fake Salesforce."""
