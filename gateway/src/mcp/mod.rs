//! MCP's protocol layer, shared by every MCP transport (`routes::mcp`) and, as they land, the
//! hosted endpoint and the channel MCP server: JSON-RPC messages, protocol revisions, the
//! dispatcher, and the per-request checks of the sessionless 2026-07-28 revision.

pub mod dispatch;
pub mod jsonrpc;
pub mod revision;
pub mod stateless;
pub mod tasks;

pub use dispatch::{BodyReply, Ctx, Reply, Transport};
pub use revision::Revision;
