//! StorageClass parameters: the input is `key=value` lines (a line without `=` is a key with
//! an empty value). Parsing never panics and every rejection is InvalidArgument; an accepted
//! `volumeoptions` never carries shell syntax; `volumetype` text round-trips.
#![no_main]

use std::collections::HashMap;

use gluster_csi_controller::error::Error;
use gluster_csi_controller::params::{ClassParams, Credentials, VolumeType, check_url};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut params = HashMap::new();
    for line in text.split('\n') {
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        params.insert(k.to_owned(), v.to_owned());
    }
    match ClassParams::parse(&params) {
        Ok(p) => {
            for item in &p.volume_options {
                assert!(
                    item.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-_:/@+=% ".contains(c)),
                    "{item:?}"
                );
            }
            match p.credentials(&params) {
                Ok(_) | Err(Error::InvalidArgument(_)) => {}
                Err(e) => panic!("credentials: {e:?}"),
            }
        }
        Err(Error::InvalidArgument(_)) => {}
        Err(e) => panic!("not InvalidArgument: {e:?}"),
    }
    match Credentials::from_secrets(&params) {
        Ok(_) | Err(Error::InvalidArgument(_)) => {}
        Err(e) => panic!("secrets: {e:?}"),
    }
    match VolumeType::parse(&text) {
        Ok(t) => assert_eq!(VolumeType::parse(&t.to_string()).ok(), Some(t)),
        Err(Error::InvalidArgument(_)) => {}
        Err(e) => panic!("volumetype: {e:?}"),
    }
    match check_url(&text) {
        Ok(u) => assert!(u.starts_with("http://") || u.starts_with("https://")),
        Err(Error::InvalidArgument(_)) => {}
        Err(e) => panic!("resturl: {e:?}"),
    }
});
