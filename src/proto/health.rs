//! The health document of `GET /api/health`.

use serde::{Deserialize, Serialize};

use super::status::SlotStatus;

/// The overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Every slot wanted up is up and ready.
    Healthy,
    /// A slot wanted up is not up and ready.
    Degraded,
    /// The container is shutting down.
    Stopping,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Stopping => "stopping",
        }
    }
}

/// The loaded slots: their names, their count, and each one's record keyed by its name
/// (the shape of the original health API, which keyed its mods by id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slots {
    pub loaded: Vec<String>,
    pub count: usize,
    pub details: std::collections::BTreeMap<String, SlotStatus>,
}

impl Slots {
    pub fn new(statuses: Vec<SlotStatus>) -> Slots {
        Slots {
            loaded: statuses.iter().map(|s| s.slot.clone()).collect(),
            count: statuses.len(),
            details: statuses.into_iter().map(|s| (s.slot.clone(), s)).collect(),
        }
    }
}

/// `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthDoc {
    pub status: HealthStatus,
    pub init: String,
    pub version: String,
    /// Seconds since the init started.
    pub uptime: f64,
    /// When the init started (epoch seconds).
    pub started_at: u64,
    /// Set while another container holds the volume: who (the gateways stay down here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<String>,
    pub slots: Slots,
}

/// `GET /api/health?level=alive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alive {
    pub status: String,
}

/// The body of an error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpError {
    pub error: String,
}
