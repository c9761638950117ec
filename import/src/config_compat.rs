//! Config files written by an older version still load: settings added since take their
//! defaults (Burn's `Config` derive gives serde no per-field defaults).

/// `base` with every value `top` has put over it, objects merged key by key: `base` holds the
/// current defaults, `top` what the file says.
pub fn overlay(base: &mut serde_json::Value, top: serde_json::Value) {
    match (base, top) {
        (serde_json::Value::Object(b), serde_json::Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(slot) => overlay(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, top) => *slot = top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_values_win_and_missing_ones_come_from_the_defaults() {
        let mut base = serde_json::json!({"a": 1, "n": {"x": 1, "y": 2}});
        overlay(&mut base, serde_json::json!({"n": {"x": 5}, "b": 3}));
        assert_eq!(
            base,
            serde_json::json!({"a": 1, "n": {"x": 5, "y": 2}, "b": 3})
        );
    }
}
