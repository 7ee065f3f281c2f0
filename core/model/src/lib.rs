//! The model layer: forms, answers, validation and domain values. Pure Rust, no I/O.

pub mod code_list;
pub mod default_form;
pub mod domain;
pub mod engine;
pub mod expr;
pub mod form;
pub mod text;
