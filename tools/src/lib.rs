//! Load generator and test backends.
