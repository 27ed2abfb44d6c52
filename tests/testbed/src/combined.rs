//! One CSI endpoint for the whole plugin: Identity and Controller calls go to the controller,
//! Node calls to the node plugin.
//!
//! The driver runs as two processes (a controller Deployment and a node DaemonSet), each with its
//! own socket, and the node plugin rightly does not advertise `CONTROLLER_SERVICE`. Tools that
//! expect the whole plugin behind one endpoint decide from that endpoint's Identity whether a
//! Controller exists: csi-sanity skips its two end-to-end Node tests ("should work", "should be
//! idempotent": create → stage → publish → stats, once and ×10) when `--csi.endpoint` does not
//! advertise it. Serving Identity from the controller on a combined socket presents the plugin
//! as Kubernetes sees it — controller and node together — without changing either binary.
//!
//! Requests are forwarded as raw HTTP/2 gRPC calls (headers, messages, trailers and deadlines
//! unchanged), so the answers, status codes included, are the processes' own.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result};
use gluster_csi_runtime::socket::{self, Endpoint};
use gluster_csi_runtime::{serve, shutdown};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::transport::{Channel, Server};

/// The gRPC service name a forwarder answers for.
pub trait ServiceName: Send + Sync + 'static {
    /// `package.Service`, as in the request path `/package.Service/Method`.
    const NAME: &'static str;
}

/// `csi.v1.Identity`.
#[derive(Clone, Copy, Debug)]
pub struct Identity;
impl ServiceName for Identity {
    const NAME: &'static str = "csi.v1.Identity";
}

/// `csi.v1.Controller`.
#[derive(Clone, Copy, Debug)]
pub struct Controller;
impl ServiceName for Controller {
    const NAME: &'static str = "csi.v1.Controller";
}

/// `csi.v1.Node`.
#[derive(Clone, Copy, Debug)]
pub struct Node;
impl ServiceName for Node {
    const NAME: &'static str = "csi.v1.Node";
}

/// Forwards every call of service `N` to `channel`.
#[derive(Clone, Debug)]
pub struct Forward<N> {
    channel: Channel,
    name: PhantomData<N>,
}

impl<N> Forward<N> {
    /// A forwarder to `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            channel,
            name: PhantomData,
        }
    }
}

impl<N: ServiceName> NamedService for Forward<N> {
    const NAME: &'static str = N::NAME;
}

impl<N: ServiceName> Service<http::Request<Body>> for Forward<N> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let mut channel = self.channel.clone();
        Box::pin(async move {
            let answer = std::future::poll_fn(|cx| channel.poll_ready(cx)).await;
            let answer = match answer {
                Ok(()) => channel.call(request).await,
                Err(e) => Err(e),
            };
            Ok(answer.unwrap_or_else(|e| {
                tonic::Status::unavailable(format!("{} is not reachable: {e}", N::NAME)).into_http()
            }))
        })
    }
}

/// A lazily connecting channel to a `unix://` endpoint.
pub fn channel(endpoint: &str) -> Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .with_context(|| format!("{endpoint:?} is not a CSI endpoint"))?
        .connect_lazy())
}

/// Serves the combined endpoint on `listen` (`unix:///…`) until SIGINT or SIGTERM.
pub async fn serve(listen: &str, controller: &str, node: &str) -> Result<()> {
    let endpoint: Endpoint = listen.parse()?;
    let controller = channel(controller)?;
    let router = Server::builder()
        .add_service(Forward::<Identity>::new(controller.clone()))
        .add_service(Forward::<Controller>::new(controller))
        .add_service(Forward::<Node>::new(channel(node)?));
    let listener = socket::bind(&endpoint)?;
    serve::serve(router, listener, &endpoint, shutdown::shutdown_signal()).await?;
    Ok(())
}

/// Command line of `gluster-csi-testbed combined-endpoint`.
#[derive(Clone, Debug, clap::Args)]
pub struct CombinedArgs {
    /// Socket to serve on, `unix:///…`.
    #[arg(long)]
    pub listen: String,
    /// The controller's endpoint (Identity and Controller calls go there).
    #[arg(long)]
    pub controller: String,
    /// The node plugin's endpoint (Node calls go there).
    #[arg(long)]
    pub node: String,
}

/// Runs `combined-endpoint` until SIGINT or SIGTERM.
pub async fn run(args: CombinedArgs) -> Result<()> {
    serve(&args.listen, &args.controller, &args.node).await
}
