//! Tamper-evident hop audit log (hash chain, Ed25519 checkpoints), its verifier and reports.
