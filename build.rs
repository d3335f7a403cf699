//! Compiles proto/ without a system protoc (protox) and writes the descriptor
//! set that gRPC server reflection serves.

use prost::Message;
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["session/v1/session.proto"], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("session_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Request decode failures (e.g. non-UTF-8 strings) become INVALID_ARGUMENT.
        .codec_path("crate::wire::codec::StrictCodec")
        // These carry secrets: their Debug is written by hand, redacted.
        .skip_debug([
            "session.v1.LoginRequest",
            "session.v1.LoginResponse",
            "session.v1.ValidateSessionRequest",
            "session.v1.Credentials",
            "session.v1.Credentials.secret",
            "session.v1.LogoutAllRequest",
            "session.v1.ChangePasswordRequest",
        ])
        .compile_fds(fds)?;
    Ok(())
}
