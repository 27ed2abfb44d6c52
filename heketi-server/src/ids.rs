//! Heketi ids: 32 lowercase hex characters.

/// A fresh random id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_32_hex() {
        let id = super::new_id();
        assert!(crate::validate::is_id(&id));
        assert_ne!(id, super::new_id());
    }
}
