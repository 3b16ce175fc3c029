"""Evidence that stands up in a dispute: verification of the chains, the ledger and its signed
checkpoints, the exportable bundle, and retention (erasure by policy)."""
