//! Root end-to-end tests in network namespaces.
