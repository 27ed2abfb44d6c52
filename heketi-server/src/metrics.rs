//! `GET /metrics`: Heketi's Prometheus gauges (the subset that applies to directory devices).

use std::fmt::Write;

use crate::app::App;

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics page.
pub async fn render(app: &App) -> String {
    let inflight = app.queue.inflight();
    app.store
        .read(|s| {
            let mut out = String::new();
            let _ = writeln!(out, "# HELP heketi_up Is heketi running?");
            let _ = writeln!(out, "# TYPE heketi_up gauge\nheketi_up 1");
            let _ = writeln!(out, "# HELP heketi_cluster_count Number of clusters");
            let _ = writeln!(
                out,
                "# TYPE heketi_cluster_count gauge\nheketi_cluster_count {}",
                s.clusters.len()
            );
            let _ = writeln!(out, "# HELP heketi_volumes_count Number of volumes on cluster");
            let _ = writeln!(out, "# TYPE heketi_volumes_count gauge");
            for c in s.clusters.keys() {
                let n = s
                    .volumes
                    .values()
                    .filter(|v| &v.cluster == c && v.visible())
                    .count();
                let _ = writeln!(out, "heketi_volumes_count{{cluster=\"{}\"}} {n}", esc(c));
            }
            let _ = writeln!(out, "# HELP heketi_nodes_count Number of nodes on cluster");
            let _ = writeln!(out, "# TYPE heketi_nodes_count gauge");
            for c in s.clusters.keys() {
                let _ = writeln!(
                    out,
                    "heketi_nodes_count{{cluster=\"{}\"}} {}",
                    esc(c),
                    s.cluster_nodes(c).len()
                );
            }
            for (name, help) in [
                ("device_size", "Total size of the device"),
                ("device_free", "Amount of Free space available on the device"),
                ("device_used", "Amount of space used on the device"),
                ("device_brick_count", "Number of bricks on device"),
            ] {
                let _ = writeln!(out, "# HELP heketi_{name} {help}");
                let _ = writeln!(out, "# TYPE heketi_{name} gauge");
                for d in s.devices.values() {
                    let Some(n) = s.nodes.get(&d.node) else { continue };
                    let used = s.device_used_kib(&d.id);
                    let value = match name {
                        "device_size" => d.total_kib,
                        "device_free" => d.total_kib.saturating_sub(used),
                        "device_used" => used,
                        _ => s.device_bricks(&d.id).len() as u64,
                    };
                    let _ = writeln!(
                        out,
                        "heketi_{name}{{cluster=\"{}\",hostname=\"{}\",storage_hostname=\"{}\",id=\"{}\",device=\"{}\",pv_uuid=\"\"}} {value}",
                        esc(&n.cluster),
                        esc(n.manage.first().map(String::as_str).unwrap_or("")),
                        esc(n.brick_host()),
                        esc(&d.id),
                        esc(&d.name),
                    );
                }
            }
            let _ = writeln!(out, "# HELP heketi_operations_inflight Volume operations running");
            let _ = writeln!(
                out,
                "# TYPE heketi_operations_inflight gauge\nheketi_operations_inflight {inflight}"
            );
            out
        })
        .await
}
