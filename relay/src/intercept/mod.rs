//! Lawful-interception point: warrant-bound, audited, off by default (see docs/lawful-interception.md).
