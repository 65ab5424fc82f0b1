//! What `hactl checks` shows of one real server: the director's report, a plain data type
//! the control protocol carries without reaching into the running director.

/// One real server's state, for `hactl checks`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RealReport {
    /// The virtual service (`tcp 192.0.2.10:80`).
    pub virtual_service: String,
    /// The real server (`192.0.2.21:80`).
    pub real: String,
    /// `up` or `down`; for the fallback, `serving` or `idle`.
    pub state: String,
    /// Weight programmed now.
    pub weight: Option<u32>,
    /// Seconds since the last state change.
    pub since_change_s: f64,
    /// Seconds since the last check finished.
    pub last_check_s: Option<f64>,
    /// Outcome of the last check, e.g. "HTTP 200" or "connect refused": why it is in its state.
    pub reason: Option<String>,
    /// The virtual service's `servicename`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The virtual service's `comment`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// This row is the virtual's fallback server (`fallback =`), not a real.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
}
