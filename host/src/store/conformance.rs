//! The behaviour every [`super::Store`] must show.
