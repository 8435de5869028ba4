//! HTTP surfaces, one module each. Handlers are thin: they parse, call the engine, and render.

pub mod admin;
pub mod channels;
pub mod execute;
pub mod llm;
pub mod mcp;
pub mod openapi;
pub mod ops;
pub mod portal;
pub mod public;
