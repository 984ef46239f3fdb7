//! Placeholder: this adapter is being written.
