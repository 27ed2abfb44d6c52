//! The flags every CSI plugin binary of this project takes ([`CommonArgs`]) and the CSI driver
//! name rules ([`parse_driver_name`]) (feature `csi`).

use crate::logging::LogFormat;
use crate::socket::Endpoint;

/// Flags every CSI plugin binary of this project takes, following the CSI sidecar conventions.
/// Each has an environment fallback.
#[derive(Clone, Debug, clap::Args)]
pub struct CommonArgs {
    /// CSI endpoint to serve on.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: Endpoint,
    /// CSI driver name, as in the CSIDriver object and the StorageClass `provisioner`.
    #[arg(long, env = "DRIVER_NAME", default_value = DEFAULT_DRIVER_NAME, value_parser = parse_driver_name)]
    pub driver_name: String,
    /// Log line format; the level is set with RUST_LOG (default info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// Address (host:port) to serve Prometheus metrics on; none when unset.
    #[arg(long, env = "METRICS_ADDRESS")]
    pub metrics_address: Option<std::net::SocketAddr>,
}

/// The driver name used when `--driver-name` is not given.
pub const DEFAULT_DRIVER_NAME: &str = "gluster.heketi.csi";

/// Checks a CSI driver name: at most 63 characters, letters, digits, `-`, `.` and `_`, starting
/// and ending with a letter (the CSI spec and the CSIDriver object require this).
pub fn parse_driver_name(name: &str) -> Result<String, String> {
    let bytes = name.as_bytes();
    let fits = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 1].is_ascii_alphabetic()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if fits {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} is not a valid CSI driver name: use at most 63 letters, digits, '-', '.' \
             or '_', starting and ending with a letter (e.g. {DEFAULT_DRIVER_NAME})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_driver_name;

    #[test]
    fn driver_names_follow_the_csi_rules() {
        for ok in ["gluster.heketi.csi", "a", "ab", "x-y_z.w"] {
            assert!(parse_driver_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "1abc",
            "abc1",
            "gluster.heketi.csi.",
            "a b",
            long.as_str(),
        ] {
            assert!(parse_driver_name(bad).is_err(), "{bad}");
        }
    }
}
