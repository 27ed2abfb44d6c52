//! Compiles `csi.proto` into Rust with protox (a pure-Rust protobuf compiler,
//! so no system `protoc` is needed) and tonic-prost-build.
//!
//! Every message that has a field tagged with the `csi.v1.csi_secret` option
//! is generated without `Debug`, so that a request carrying credentials
//! cannot be printed by accident. The list is computed from the descriptor
//! pool, not written by hand, and is exported to the crate as
//! `v1::MESSAGES_WITHOUT_DEBUG` so tests can check it.

use std::error::Error;
use std::fmt::Write as _;
use std::path::PathBuf;

use protox::prost_reflect::{DescriptorPool, Value};

/// The proto file, relative to the crate root.
const PROTO_FILE: &str = "csi.proto";

/// Fully qualified name of the field option that marks secret fields.
const SECRET_OPTION: &str = "csi.v1.csi_secret";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_FILE}");
    println!("cargo:rerun-if-changed=build.rs");

    let mut compiler = protox::Compiler::new(["."])?;
    compiler.include_source_info(true);
    // prost-build needs the imported well-known types to resolve fields.
    compiler.include_imports(true);
    compiler.open_file(PROTO_FILE)?;

    let secret_messages = messages_with_secrets(&compiler.descriptor_pool())?;
    if secret_messages.is_empty() {
        return Err(format!("no field in {PROTO_FILE} carries the {SECRET_OPTION} option").into());
    }

    // prost-build matches paths against fully qualified names with a
    // leading dot.
    let skip_debug: Vec<String> = secret_messages.iter().map(|m| format!(".{m}")).collect();

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // RPCs a service does not implement answer UNIMPLEMENTED instead of failing to build.
        .generate_default_stubs(true)
        .skip_debug(&skip_debug)
        .compile_fds(compiler.file_descriptor_set())?;

    write_secret_list(&secret_messages)?;
    Ok(())
}

/// Names (fully qualified, without leading dot) of every message that has at
/// least one field whose options set `csi_secret = true`, sorted.
fn messages_with_secrets(pool: &DescriptorPool) -> Result<Vec<String>, Box<dyn Error>> {
    let secret = pool
        .get_extension_by_name(SECRET_OPTION)
        .ok_or_else(|| format!("extension {SECRET_OPTION} is not declared"))?;

    let mut names: Vec<String> = pool
        .all_messages()
        .filter(|message| {
            message.fields().any(|field| {
                let options = field.options();
                options.has_extension(&secret)
                    && matches!(*options.get_extension(&secret), Value::Bool(true))
            })
        })
        .map(|message| message.full_name().to_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Writes `$OUT_DIR/csi_secret_messages.rs`, which `src/lib.rs` includes
/// inside the `v1` module.
fn write_secret_list(names: &[String]) -> Result<(), Box<dyn Error>> {
    let mut text = String::from(
        "/// Fully qualified names of the CSI messages that carry a field marked\n\
         /// `csi_secret`. These types are generated without `Debug`.\n\
         pub const MESSAGES_WITHOUT_DEBUG: &[&str] = &[\n",
    );
    for name in names {
        writeln!(text, "    {name:?},")?;
    }
    text.push_str("];\n");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("csi_secret_messages.rs"), text)?;
    Ok(())
}
