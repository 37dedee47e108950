//! Keeps a Secret for every managed ServiceAccount.
