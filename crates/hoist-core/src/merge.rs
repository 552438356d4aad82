//! Deep merge of JSON documents (run resource args over a queue config; a run's
//! Kubernetes Job over the queue's).

use serde_json::Value;

/// Merges `over` into `base`: objects merge key by key, recursively; any other value
/// (arrays included) replaces what was there. A `null` in `over` removes the key.
pub fn deep_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else {
                    match b.get_mut(k) {
                        Some(slot) => deep_merge(slot, v),
                        None => {
                            b.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges() {
        let mut a = json!({"a": 1, "b": {"c": 2, "d": [1, 2]}, "e": "x"});
        deep_merge(
            &mut a,
            &json!({"b": {"c": 3, "d": [9]}, "e": null, "f": true}),
        );
        assert_eq!(a, json!({"a": 1, "b": {"c": 3, "d": [9]}, "f": true}));
        let mut s = json!(1);
        deep_merge(&mut s, &json!({"x": 1}));
        assert_eq!(s, json!({"x": 1}));
    }
}
