"""Jobs that look after a vault over time: health surveys, repair, drain, forget, prune,
maintenance (docs/design.md §15a). Each job works over one ``store.Operation``; the Vault's
door methods (``vault_integrity``, ``vault_upkeep``) make the operation and hand it in."""
