//! Build logic without IO (being written).
