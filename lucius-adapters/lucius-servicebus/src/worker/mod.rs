//! The worker-side receiver (being written).
