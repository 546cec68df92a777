"""The lake's layout, table schemas, run ledger and commit protocol."""
