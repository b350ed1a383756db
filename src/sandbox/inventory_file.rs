//! The inventory file a sandbox writes (the TOML format of docs/contracts.md) for `recipe run -i`.

use std::net::Ipv4Addr;
use std::path::Path;

/// What goes into the inventory.
pub struct InventorySpec<'a> {
    pub sandbox: &'a str,
    pub known_hosts: &'a Path,
    pub key: &'a Path,
    pub hosts: &'a [(String, Ipv4Addr)],
    pub files_url: &'a str,
    pub proxy_url: &'a str,
}

/// A TOML basic string, quoted and escaped.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The inventory text: known_hosts, [vars], one [hosts.NAME] per host, and group `workers`
/// (every host but the first). Group `all` is implicit in the inventory format (every host),
/// and the inventory reader refuses an explicit `[groups.all]`, so it is named in a comment only.
pub fn render(spec: &InventorySpec) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "# Written by `recipe sandbox up --name {}`; removed by `recipe sandbox down`.\n",
        spec.sandbox
    ));
    s.push_str(&format!(
        "known_hosts = {}\n\n",
        q(&spec.known_hosts.to_string_lossy())
    ));
    s.push_str("[vars]\n");
    s.push_str(&format!("sandbox_files_url = {}\n", q(spec.files_url)));
    s.push_str(&format!("sandbox_proxy = {}\n", q(spec.proxy_url)));
    let key = spec.key.to_string_lossy();
    for (name, addr) in spec.hosts {
        s.push_str(&format!("\n[hosts.{name}]\n"));
        s.push_str(&format!("address = {}\n", q(&addr.to_string())));
        s.push_str("user = \"root\"\n");
        s.push_str("port = 22\n");
        s.push_str(&format!("key = {}\n", q(&key)));
    }
    let all: Vec<&str> = spec.hosts.iter().map(|(n, _)| n.as_str()).collect();
    s.push_str(&format!(
        "\n# Group \"all\" is implicit: {}.\n",
        all.join(", ")
    ));
    s.push_str(&format!(
        "\n[groups.workers]\nhosts = {}\n",
        list(all.get(1..).unwrap_or(&[]))
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec_text(hosts: &[(String, Ipv4Addr)]) -> String {
        let kh = PathBuf::from("/var/lib/recipe/sandbox/t/known_hosts");
        let key = PathBuf::from("/var/lib/recipe/sandbox/t/id_ed25519");
        render(&InventorySpec {
            sandbox: "t",
            known_hosts: &kh,
            key: &key,
            hosts,
            files_url: "http://10.231.5.1:8000",
            proxy_url: "http://10.231.5.1:3128",
        })
    }

    #[test]
    fn renders_valid_toml_with_all_parts() {
        let hosts = vec![
            ("master".to_string(), Ipv4Addr::new(10, 231, 5, 10)),
            ("w1".to_string(), Ipv4Addr::new(10, 231, 5, 11)),
            ("w2".to_string(), Ipv4Addr::new(10, 231, 5, 12)),
        ];
        let text = spec_text(&hosts);
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(
            v["known_hosts"].as_str(),
            Some("/var/lib/recipe/sandbox/t/known_hosts")
        );
        assert_eq!(
            v["vars"]["sandbox_files_url"].as_str(),
            Some("http://10.231.5.1:8000")
        );
        assert_eq!(
            v["vars"]["sandbox_proxy"].as_str(),
            Some("http://10.231.5.1:3128")
        );
        assert_eq!(v["hosts"]["w1"]["address"].as_str(), Some("10.231.5.11"));
        assert_eq!(v["hosts"]["w1"]["user"].as_str(), Some("root"));
        assert_eq!(
            v["hosts"]["master"]["key"].as_str(),
            Some("/var/lib/recipe/sandbox/t/id_ed25519")
        );
        // `all` is implicit in the inventory format; an explicit one is refused by the reader.
        assert!(v["groups"].get("all").is_none());
        assert!(text.contains("# Group \"all\" is implicit: master, w1, w2."));
        let workers: Vec<&str> = v["groups"]["workers"]["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x.as_str())
            .collect();
        assert_eq!(workers, ["w1", "w2"]);
    }

    #[test]
    fn the_inventory_reader_accepts_it() {
        let hosts = vec![
            ("master".to_string(), Ipv4Addr::new(10, 231, 5, 10)),
            ("w1".to_string(), Ipv4Addr::new(10, 231, 5, 11)),
        ];
        let text = spec_text(&hosts);
        let inv = crate::inventory::parse(&text, std::path::Path::new("inventory.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(inv.group_members("workers"), Some(vec!["w1".to_string()]));
        assert_eq!(
            inv.group_members("all"),
            Some(vec!["master".to_string(), "w1".to_string()])
        );
        assert_eq!(
            inv.known_hosts_path(),
            PathBuf::from("/var/lib/recipe/sandbox/t/known_hosts")
        );
    }

    #[test]
    fn single_host_has_no_workers() {
        let text = spec_text(&[("solo".to_string(), Ipv4Addr::new(10, 231, 5, 10))]);
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(
            v["groups"]["workers"]["hosts"].as_array().map(|a| a.len()),
            Some(0)
        );
    }
}
