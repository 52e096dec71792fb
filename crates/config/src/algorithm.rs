//! The balancing algorithms by name (`algorithm` in the configuration and the admin API); the
//! pickers that implement them live in the balance layer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a worker chooses the backend for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Each backend in turn (smooth weighted round robin when weights differ); the default.
    #[default]
    RoundRobin,
    /// Uniformly at random (in proportion to weight when weights differ).
    Random,
    /// Fewest requests in flight across all workers (per unit of weight); ties in turn.
    LeastConnections,
    /// Lowest average response time over the window (divided by weight); backends without
    /// samples first.
    ResponseTime,
}

impl Algorithm {
    /// Every algorithm, in documentation order.
    pub const ALL: [Algorithm; 4] =
        [Self::RoundRobin, Self::Random, Self::LeastConnections, Self::ResponseTime];

    /// The configuration and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Random => "random",
            Self::LeastConnections => "least_connections",
            Self::ResponseTime => "response_time",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An algorithm name that is not one of [`Algorithm::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown algorithm `{0}` (valid: round_robin, random, least_connections, response_time)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
        }
        assert!("fastest".parse::<Algorithm>().unwrap_err().to_string().contains("round_robin"));
    }
}
