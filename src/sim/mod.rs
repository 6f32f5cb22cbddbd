//! keepstore-sim (placeholder)
