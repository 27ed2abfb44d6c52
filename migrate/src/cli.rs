//! The `gluster-csi-migrate` command line.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use gluster_csi_runtime::args::{DEFAULT_DRIVER_NAME, parse_driver_name};

use super::apply::{ApplyOptions, apply};
use super::{Inventory, MigrateError, Options, Plan};
use gluster_csi_controller::kube::LazyClient;

/// Moves in-tree kubernetes.io/glusterfs PersistentVolumes to gluster-csi without copying
/// data. By default prints the plan and the new objects (dry run); --apply performs it.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "gluster-csi-migrate", version, about)]
pub struct Args {
    /// Migrate only these PersistentVolumes (default: every in-tree Gluster PV).
    pub pv_names: Vec<String>,
    /// Read the in-tree objects (PVs, PVCs, Endpoints, Services, StorageClasses; multi-document
    /// YAML or `kind: List`, e.g. `kubectl get pv,pvc,ep,svc,sc -A -o yaml`) from this file
    /// instead of the API; `-` is standard input. Repeatable.
    #[arg(long = "from-file", value_name = "FILE")]
    pub from_file: Vec<PathBuf>,
    /// Extra YAML file with the PVs' Endpoints objects. Repeatable.
    #[arg(long = "endpoints-file", value_name = "FILE")]
    pub endpoints_file: Vec<PathBuf>,
    /// Gluster servers (comma-separated) for PVs whose Endpoints are not available.
    #[arg(long, value_delimiter = ',', value_name = "HOST,...")]
    pub servers: Vec<String>,
    /// CSI driver name of the new PVs.
    #[arg(long, env = "DRIVER_NAME", default_value = DEFAULT_DRIVER_NAME, value_parser = parse_driver_name)]
    pub driver_name: String,
    /// Heketi URL to record in the volume ids, instead of the StorageClass's resturl.
    #[arg(long, value_name = "URL")]
    pub heketi_url: Option<String>,
    /// The controller's --heketi-url: volumes on that Heketi are recorded as being on the
    /// controller's default backend.
    #[arg(long, env = "HEKETI_URL", value_name = "URL")]
    pub controller_heketi_url: Option<String>,
    /// Storage class name of the new PVs and PVCs (default: keep the old one).
    #[arg(long, value_name = "NAME")]
    pub storage_class: Option<String>,
    /// Write the dry-run output to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Perform the plan through the Kubernetes API (default: dry run).
    #[arg(long)]
    pub apply: bool,
    /// With --apply: scale the Deployments/StatefulSets using a PVC to zero and back.
    #[arg(long, requires = "apply")]
    pub scale_consumers: bool,
    /// With --apply: where the old PV and PVC objects are saved first.
    #[arg(long, default_value = "gluster-csi-migrate-backup", value_name = "DIR")]
    pub backup_dir: PathBuf,
    /// With --apply: longest wait for a deletion, pods to stop, or a PVC to bind, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub wait_timeout: u64,
}

/// What the run ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything planned (dry run) or done (apply).
    Complete,
    /// The dry run found PVs that cannot be migrated (listed in the output).
    SomeFailed,
}

fn read_input(path: &PathBuf) -> Result<String, MigrateError> {
    let io = |source| MigrateError::Io {
        what: format!("reading {}", path.display()),
        source,
    };
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(io)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(io)
    }
}

/// Runs the command. Progress of `--apply` goes to `progress`.
pub async fn run(
    args: Args,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Outcome, MigrateError> {
    let client = LazyClient::infer();
    let mut inv = if args.from_file.is_empty() {
        Inventory::from_api(client.get().await?, &args.pv_names).await?
    } else {
        let mut inv = Inventory::default();
        for path in &args.from_file {
            inv.add_yaml(&read_input(path)?, &path.display().to_string())?;
        }
        inv
    };
    for path in &args.endpoints_file {
        inv.add_yaml(&read_input(path)?, &path.display().to_string())?;
    }
    let opts = Options {
        driver_name: args.driver_name.clone(),
        heketi_url: args.heketi_url.clone(),
        default_heketi_url: args.controller_heketi_url.clone(),
        servers: args
            .servers
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        storage_class: args.storage_class.clone(),
    };
    let plan = Plan::build(&inv, &args.pv_names, &opts);
    if !args.apply {
        let text = plan.render()?;
        match &args.output {
            Some(path) => std::fs::write(path, text).map_err(|source| MigrateError::Io {
                what: format!("writing {}", path.display()),
                source,
            })?,
            None => print!("{text}"),
        }
        return Ok(if plan.failed.is_empty() {
            Outcome::Complete
        } else {
            Outcome::SomeFailed
        });
    }
    let opts = ApplyOptions {
        scale_consumers: args.scale_consumers,
        backup_dir: args.backup_dir.clone(),
        wait: Duration::from_secs(args.wait_timeout.max(1)),
        poll: Duration::from_secs(2),
    };
    apply(client.get().await?, &plan, &opts, progress).await?;
    for step in plan.steps() {
        if let super::Step::RestoreReclaimPolicy { .. } = step {
            progress(format!("left to do: {step}"));
        }
    }
    Ok(Outcome::Complete)
}
