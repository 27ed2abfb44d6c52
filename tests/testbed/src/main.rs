//! `gluster-csi-testbed`: bring the gluster-csi testbed up, look at it, tear it down.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use gluster_csi_testbed::host::ExecutorKind;
use gluster_csi_testbed::{Testbed, TestbedOptions, status};

#[derive(Debug, Parser)]
#[command(name = "gluster-csi-testbed", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the testbed: Gluster hosts in network namespaces, heketi-server, the controller and
    /// the node plugin; writes STATE/testbed.env.
    Up {
        /// Directory for everything of this testbed; names and addresses derive from it.
        #[arg(long, env = "GLUSTER_CSI_TESTBED_DIR")]
        state_dir: PathBuf,
        /// Number of Gluster hosts.
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        /// Do not start heketi-server (implies --no-controller).
        #[arg(long)]
        no_heketi: bool,
        /// Do not start the controller.
        #[arg(long)]
        no_controller: bool,
        /// Do not start the node plugin.
        #[arg(long)]
        no_node: bool,
        /// How heketi-server reaches the hosts: `ssh` (each host has a private device and its
        /// own sshd, as separate machines) or `local` (hosts share this machine's file system).
        #[arg(long, value_enum, default_value_t = ExecutorKind::Ssh)]
        executor: ExecutorKind,
    },
    /// Remove every mount, process, namespace, link and file of the testbed (safe to repeat).
    Down {
        /// The testbed's state directory.
        #[arg(long, env = "GLUSTER_CSI_TESTBED_DIR")]
        state_dir: PathBuf,
    },
    /// Show what of the testbed exists and runs.
    Status {
        /// The testbed's state directory.
        #[arg(long, env = "GLUSTER_CSI_TESTBED_DIR")]
        state_dir: PathBuf,
    },
    /// (Internal) Run ARGV in a mount namespace of its own, set up by the flags in the order
    /// --tmpfs, --bind, --mkdir, --symlink, --hide: how the testbed gives each Gluster host its
    /// own /run, its private disk and its view of the machine.
    #[command(hide = true)]
    HostExec {
        /// Directory to cover with an empty tmpfs first; repeat for more.
        #[arg(long = "tmpfs")]
        tmpfs: Vec<PathBuf>,
        /// SRC:DST, both absolute, bind-mounted next; repeat for more.
        #[arg(long = "bind", value_parser = gluster_csi_testbed::gluster::parse_bind)]
        binds: Vec<(PathBuf, PathBuf)>,
        /// Directory to make next; repeat for more.
        #[arg(long = "mkdir")]
        dirs: Vec<PathBuf>,
        /// TARGET:LINK, a symbolic link to make next; repeat for more.
        #[arg(long = "symlink", value_parser = gluster_csi_testbed::gluster::parse_bind)]
        symlinks: Vec<(PathBuf, PathBuf)>,
        /// Directory to cover with an empty tmpfs last; repeat for more.
        #[arg(long = "hide")]
        hide: Vec<PathBuf>,
        /// The command to execute, after `--`.
        #[arg(last = true, required = true)]
        argv: Vec<std::ffi::OsString>,
    },
    /// Walk a PersistentVolumeClaim of deploy/examples through its whole life on a fresh testbed
    /// (create, stage, publish into two pods, expand, unpublish, unstage, delete), printing
    /// each step and what it proves.
    Demo(gluster_csi_testbed::demo::DemoArgs),
    /// Serve one CSI endpoint for the whole plugin (Identity and Controller from the
    /// controller, Node from the node plugin), for tools such as csi-sanity.
    CombinedEndpoint(gluster_csi_testbed::combined::CombinedArgs),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up {
            state_dir,
            hosts,
            no_heketi,
            no_controller,
            no_node,
            executor,
        } => {
            let opts = TestbedOptions {
                state_dir,
                hosts,
                heketi: !no_heketi,
                controller: !no_heketi && !no_controller,
                node: !no_node,
                executor,
            };
            let started = Instant::now();
            let tb = Testbed::up(opts).await?;
            let dir = tb.state_dir().to_path_buf();
            println!(
                "# testbed up in {:.1}s; source {}/testbed.env",
                started.elapsed().as_secs_f64(),
                dir.display()
            );
            print!("{}", tb.env().redacted());
            if !tb.hosts().is_empty() {
                println!("# gluster CLI on h1: {}", tb.gluster_argv(0).join(" "));
            }
            tb.detach();
            Ok(())
        }
        Command::Down { state_dir } => {
            Testbed::down(&state_dir).await?;
            println!("testbed {} is down", state_dir.display());
            Ok(())
        }
        Command::Demo(args) => gluster_csi_testbed::demo::run(args).await,
        Command::CombinedEndpoint(args) => gluster_csi_testbed::combined::run(args).await,
        Command::HostExec {
            tmpfs,
            binds,
            dirs,
            symlinks,
            hide,
            argv,
        } => {
            let setup = gluster_csi_testbed::gluster::HostSetup {
                tmpfs,
                binds,
                dirs,
                symlinks,
                hide,
            };
            Err(gluster_csi_testbed::gluster::host_exec(&setup, &argv))
        }
        Command::Status { state_dir } => {
            print!("{}", status::status(&state_dir).await?);
            Ok(())
        }
    }
}
