//! MCP's protocol layer, shared by every MCP transport (`routes::mcp`), the hosted endpoint and
//! the channel MCP server: JSON-RPC messages, protocol revisions, the dispatcher, the
//! per-request checks of the sessionless 2026-07-28 revision, tasks and the channel tools.

pub mod audit;
pub mod channel_tools;
pub mod dispatch;
pub mod jsonrpc;
pub mod revision;
pub mod stateless;
pub mod tasks;

pub use dispatch::{BodyReply, Ctx, Reply, Transport};
pub use revision::Revision;
