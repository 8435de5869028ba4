//! HTTP surfaces, one module each. Handlers are thin: they parse, call the engine, and render.

pub mod llm;
pub mod ops;
