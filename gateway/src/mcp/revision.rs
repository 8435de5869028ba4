//! MCP protocol revisions and what differs between them for this server.

/// A protocol revision this server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Revision {
    /// The legacy HTTP+SSE era.
    V2024_11_05,
    /// Streamable HTTP; JSON-RPC batches.
    V2025_03_26,
    /// Structured tool output; no batches; `MCP-Protocol-Version` header.
    V2025_06_18,
    /// Input-validation failures as tool results.
    V2025_11_25,
    /// The stateless revision: `server/discover`, per-request `_meta`, no sessions.
    V2026_07_28,
}

impl Revision {
    /// The revisions `initialize` negotiates, oldest first.
    pub const NEGOTIABLE: [Revision; 4] = [
        Revision::V2024_11_05,
        Revision::V2025_03_26,
        Revision::V2025_06_18,
        Revision::V2025_11_25,
    ];

    /// Every revision served, oldest first.
    pub const ALL: [Revision; 5] = [
        Revision::V2024_11_05,
        Revision::V2025_03_26,
        Revision::V2025_06_18,
        Revision::V2025_11_25,
        Revision::V2026_07_28,
    ];

    /// What `initialize` answers to a version it does not speak.
    pub const NEWEST_NEGOTIABLE: Revision = Revision::V2025_11_25;

    /// A streamable HTTP request without `MCP-Protocol-Version` (SPEC §11), and `/mcp/message`
    /// without a session (seed 000).
    pub const DEFAULT_HTTP: Revision = Revision::V2025_03_26;

    /// The date string.
    pub fn as_str(self) -> &'static str {
        match self {
            Revision::V2024_11_05 => "2024-11-05",
            Revision::V2025_03_26 => "2025-03-26",
            Revision::V2025_06_18 => "2025-06-18",
            Revision::V2025_11_25 => "2025-11-25",
            Revision::V2026_07_28 => "2026-07-28",
        }
    }

    /// Parses a date string.
    pub fn parse(s: &str) -> Option<Revision> {
        Revision::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// What `initialize` answers to a requested version.
    pub fn negotiate(requested: Option<&str>) -> Revision {
        requested
            .and_then(Revision::parse)
            .filter(|r| Revision::NEGOTIABLE.contains(r))
            .unwrap_or(Revision::NEWEST_NEGOTIABLE)
    }

    /// Whether JSON-RPC batches are allowed (only 2025-03-26 has them; 2025-06-18 removed them).
    pub fn batches(self) -> bool {
        self == Revision::V2025_03_26
    }

    /// Whether tools are listed with their `outputSchema`.
    pub fn structured_output(self) -> bool {
        self >= Revision::V2025_06_18
    }

    /// Whether tools may carry `annotations`.
    pub fn tool_annotations(self) -> bool {
        self >= Revision::V2025_03_26
    }

    /// Whether a schema violation is a tool result with `isError: true` (else error -32602).
    pub fn validation_as_tool_error(self) -> bool {
        self >= Revision::V2025_11_25
    }

    /// Whether the revision is sessionless (requests carry their version in `_meta`).
    pub fn stateless(self) -> bool {
        self >= Revision::V2026_07_28
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(
            Revision::negotiate(Some("2025-06-18")),
            Revision::V2025_06_18
        );
        assert_eq!(
            Revision::negotiate(Some("2024-11-05")),
            Revision::V2024_11_05
        );
        assert_eq!(
            Revision::negotiate(Some("1999-01-01")),
            Revision::V2025_11_25
        );
        assert_eq!(
            Revision::negotiate(Some("2026-07-28")),
            Revision::V2025_11_25
        );
        assert_eq!(Revision::negotiate(None), Revision::V2025_11_25);
        for r in Revision::ALL {
            assert_eq!(Revision::parse(r.as_str()), Some(r));
        }
    }
}
