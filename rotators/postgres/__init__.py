"""The PostgreSQL rotators: ``postgres-password`` (one role, password changed in place) and
``postgres-dual`` (two roles used alternately, the old one revoked once unused).

They need psycopg 3 (``pip install 'scaivault-rotator[postgres]'``). Modules: ``options`` (the
routing-file options), ``session`` (connections and error translation), ``roles`` (the
statements), ``logins`` (the secret's and the admin's credentials), ``password`` and ``dual``
(the rotators).
"""
