//! Deep merge of JSON documents: a run's resource args over its queue config (the
//! server does it at launch), hoist's defaults under a config (the Kubernetes runner's
//! securityContext).
//!
//! Rules, applied recursively:
//! - objects merge key by key; a `null` in `over` removes the key;
//! - lists of named objects (every item of both lists an object with a string `name`:
//!   Kubernetes `containers`, `initContainers`, `env`, `volumes`, `volumeMounts`,
//!   `ports`, JobSet `replicatedJobs`, …) merge item by item by `name`: an item of
//!   `over` merges into the item of `base` with the same name, items with a new name are
//!   appended in `over`'s order, and a `null` item in `over` is dropped;
//! - anything else (other lists included) in `over` replaces what was there.
//!
//! So resource args that set one container's `args` keep the queue config's image,
//! resources and env of that container, unlike a shallow merge (W&B's), which drops
//! every nested field the override does not repeat.

use serde_json::Value;

/// Merges `over` into `base` (see the module docs).
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
        (Value::Array(b), Value::Array(o)) if named_list(b) && named_list(o) => {
            for item in o {
                let Some(name) = item_name(item) else {
                    continue;
                };
                match b.iter_mut().find(|x| item_name(x) == Some(name)) {
                    Some(slot) => deep_merge(slot, item),
                    None => b.push(item.clone()),
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn item_name(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

/// A non-empty list whose items are all objects with a string `name` (a `null` item
/// is allowed too, and ignored).
fn named_list(items: &[Value]) -> bool {
    !items.is_empty()
        && items.iter().any(|x| !x.is_null())
        && items
            .iter()
            .all(|x| x.is_null() || (x.is_object() && item_name(x).is_some()))
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

    #[test]
    fn named_lists_merge_by_name() {
        let mut base = json!({"containers": [
            {"name": "main", "image": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
            {"name": "side", "image": "s"},
        ]});
        deep_merge(
            &mut base,
            &json!({"containers": [
                {"name": "extra", "image": "e"},
                {"name": "main", "args": ["--lr", "0.1"], "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]},
                {"name": "later", "image": "l"},
            ]}),
        );
        assert_eq!(
            base,
            json!({"containers": [
                {"name": "main", "image": "a", "env": [
                    {"name": "X", "value": "1"}, {"name": "Y", "value": "3"}, {"name": "Z", "value": "4"},
                ], "args": ["--lr", "0.1"]},
                {"name": "side", "image": "s"},
                {"name": "extra", "image": "e"},
                {"name": "later", "image": "l"},
            ]})
        );
    }

    #[test]
    fn null_removes_inside_named_items() {
        let mut base = json!({"env": [{"name": "A", "value": "1", "valueFrom": null}],
            "volumes": [{"name": "data", "emptyDir": {"medium": "Memory"}}]});
        deep_merge(
            &mut base,
            &json!({"volumes": [{"name": "data", "emptyDir": null, "persistentVolumeClaim": {"claimName": "c"}}]}),
        );
        assert_eq!(
            base["volumes"],
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": "c"}}])
        );
        assert_eq!(
            base["env"],
            json!([{"name": "A", "value": "1", "valueFrom": null}])
        );
    }

    #[test]
    fn other_lists_replace() {
        // Strings, numbers, objects without a name, and mixed lists replace.
        for (b, o) in [
            (json!(["a", "b"]), json!(["c"])),
            (json!([1, 2, 3]), json!([4])),
            (
                json!([{"key": "k", "operator": "Exists"}]),
                json!([{"key": "j"}]),
            ),
            (
                json!([{"name": "a"}, {"noname": 1}]),
                json!([{"name": "a", "x": 1}]),
            ),
            (json!([{"name": "a"}]), json!([{"name": "b"}, "x"])),
            (json!([{"name": 1}]), json!([{"name": 1, "x": 2}])),
            (json!([]), json!([{"name": "a"}])),
            (json!([{"name": "a"}]), json!([])),
        ] {
            let mut m = json!({"l": b});
            deep_merge(&mut m, &json!({"l": o.clone()}));
            assert_eq!(m, json!({"l": o}));
        }
    }

    /// W&B's shallow merge of resource args over the queue config drops the config's
    /// nested fields; here the queue's resources, volume mounts and env of the
    /// container survive an override of its args, and its pod-level fields survive an
    /// override of one of them.
    #[test]
    fn resource_args_keep_nested_queue_config_fields() {
        let mut queue = json!({
            "metadata": {"name": "train", "labels": {"team": "ml"}},
            "spec": {
                "backoffLimit": 1,
                "template": {"spec": {
                    "nodeSelector": {"gpu": "a100"},
                    "containers": [{
                        "name": "trainer",
                        "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "8Gi"}},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        "env": [{"name": "DATA_DIR", "value": "/data"}],
                    }],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}}],
                }},
            },
        });
        let args = json!({"spec": {"template": {"spec": {
            "nodeSelector": {"zone": "b"},
            "containers": [{
                "name": "trainer",
                "args": ["--epochs", "3"],
                "resources": {"limits": {"memory": "16Gi"}},
                "env": [{"name": "EPOCHS", "value": "3"}],
            }],
        }}}});
        deep_merge(&mut queue, &args);
        let c = &queue["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["args"], json!(["--epochs", "3"]));
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], json!(1));
        assert_eq!(c["resources"]["limits"]["memory"], json!("16Gi"));
        assert_eq!(c["volumeMounts"][0]["mountPath"], json!("/data"));
        assert_eq!(
            c["env"],
            json!([{"name": "DATA_DIR", "value": "/data"}, {"name": "EPOCHS", "value": "3"}])
        );
        let pod = &queue["spec"]["template"]["spec"];
        assert_eq!(pod["nodeSelector"], json!({"gpu": "a100", "zone": "b"}));
        assert_eq!(
            pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
            json!("datasets")
        );
        assert_eq!(queue["spec"]["backoffLimit"], json!(1));
        assert_eq!(queue["metadata"]["labels"]["team"], json!("ml"));
    }
}
