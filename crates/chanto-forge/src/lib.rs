//! Git forge webhooks without IO (being written).
