//! Discovery tests: topics, device classes, units and state classes written
//! out by hand; the stale-entity rule.

use super::*;

fn config(extra_mqtt: &str, batteries: &[&str]) -> Config {
    let mut text = String::from("GATEWAY-ACTIVATED = true\n[battery]\nI-LIM-CHARGE = 100\nI-LIM-DISCHARGE = 120\n");
    for b in batteries {
        text.push_str(&format!("[[bmses-in]]\nCAN-IF = \"{b}\"\nCAPACITY-AH = 100\n"));
    }
    text.push_str("[[bmses-out]]\nCAN-IF = \"inv0\"\nI-LIM-CHARGE = 60\nI-LIM-DISCHARGE = 80\n");
    text.push_str(&format!(
        "[mqtt]\nBASE-TOPIC = \"home/bms\"\nTOPIC = \"tele/bms\"\n{extra_mqtt}\n"
    ));
    crate::config::parse(&text).unwrap()
}

fn find<'a>(all: &'a [Entity], topic: &str) -> &'a Value {
    &all.iter()
        .find(|e| e.topic == topic)
        .unwrap_or_else(|| panic!("no {topic}"))
        .payload
}

#[test]
fn node_ids_are_sanitized() {
    assert_eq!(sanitize("home/bms gw.1"), "home_bms_gw_1");
    assert_eq!(sanitize("bms_gateway-2"), "bms_gateway-2");
    let c = config("", &["can0"]);
    assert_eq!(node_id(&c), "home_bms");
    assert_eq!(subscription(&c), "homeassistant/+/home_bms/+/config");
}

#[test]
fn system_sensors_have_the_right_classes_and_units() {
    let c = config("", &["can0"]);
    let all = entities(&c);
    let cases = [
        ("soc", Some("battery"), Some("%"), Some("measurement")),
        ("soh", None, Some("%"), Some("measurement")),
        ("v_avg", Some("voltage"), Some("V"), Some("measurement")),
        ("i_total", Some("current"), Some("A"), Some("measurement")),
        ("power_w", Some("power"), Some("W"), Some("measurement")),
        ("t_avg", Some("temperature"), Some("°C"), Some("measurement")),
        ("capacity_ah", None, Some("Ah"), Some("measurement")),
        ("i_lim_charge", Some("current"), Some("A"), Some("measurement")),
        ("v_charge_cmd", Some("voltage"), Some("V"), Some("measurement")),
        ("n_invalid_data_telegrams", None, None, Some("total_increasing")),
    ];
    for (field, class, unit, state_class) in cases {
        let p = find(&all, &format!("homeassistant/sensor/home_bms/{field}/config"));
        assert_eq!(p["device_class"].as_str(), class, "{field}");
        assert_eq!(p["unit_of_measurement"].as_str(), unit, "{field}");
        assert_eq!(p["state_class"].as_str(), state_class, "{field}");
        assert_eq!(p["state_topic"], "tele/bms");
        assert_eq!(p["value_template"], format!("{{{{ value_json.{field} }}}}"));
        assert_eq!(p["unique_id"], format!("home_bms_{field}"));
        assert_eq!(p["availability_topic"], "home/bms/status");
        assert_eq!(p["payload_available"], "online");
        assert_eq!(p["payload_not_available"], "offline");
        assert_eq!(p["device"]["identifiers"][0], "bms_gateway_home_bms");
    }
    let state = find(&all, "homeassistant/sensor/home_bms/state/config");
    assert_eq!(state["device_class"], "enum");
    assert_eq!(
        state["options"],
        serde_json::json!(["starting", "ok", "degraded", "safe"])
    );
}

#[test]
fn alarms_are_problem_binary_sensors() {
    let c = config("", &["can0"]);
    let all = entities(&c);
    let p = find(&all, "homeassistant/binary_sensor/home_bms/protection/config");
    assert_eq!(p["device_class"], "problem");
    assert_eq!(p["payload_on"], "ON");
    let p = find(
        &all,
        "homeassistant/binary_sensor/home_bms/protection_over_voltage/config",
    );
    assert_eq!(p["device_class"], "problem");
    assert_eq!(
        p["value_template"],
        "{{ 'ON' if (value_json.error_flags_1 | int(0)) | bitwise_and(2) > 0 else 'OFF' }}"
    );
    let p = find(
        &all,
        "homeassistant/binary_sensor/home_bms/alarm_internal_communication/config",
    );
    assert_eq!(
        p["value_template"],
        "{{ 'ON' if (value_json.warning_flags_2 | int(0)) | bitwise_and(8) > 0 else 'OFF' }}"
    );
}

#[test]
fn one_device_per_battery_identified_by_its_interface() {
    let c = config("", &["can0", "can1"]);
    let all = entities(&c);
    let p = find(&all, "homeassistant/sensor/home_bms/battery_can1_soc/config");
    assert_eq!(p["state_topic"], "home/bms/battery/2/state");
    assert_eq!(p["device_class"], "battery");
    assert_eq!(p["unit_of_measurement"], "%");
    assert_eq!(p["device"]["identifiers"][0], "bms_gateway_home_bms_battery_can1");
    assert_eq!(p["device"]["via_device"], "bms_gateway_home_bms");
    assert_eq!(p["device"]["name"], "Battery 2 (can1)");
    let p = find(&all, "homeassistant/binary_sensor/home_bms/battery_can0_online/config");
    assert_eq!(p["device_class"], "connectivity");
    assert_eq!(p["state_topic"], "home/bms/battery/1/state");
}

#[test]
fn unique_ids_and_topics_are_unique() {
    let c = config("CONTROL-ACTIVATED = true", &["can0", "can1", "can2"]);
    let all = entities(&c);
    let mut topics: Vec<&str> = all.iter().map(|e| e.topic.as_str()).collect();
    let mut ids: Vec<&str> = all.iter().map(|e| e.payload["unique_id"].as_str().unwrap()).collect();
    let n = all.len();
    topics.sort();
    topics.dedup();
    ids.sort();
    ids.dedup();
    assert_eq!(topics.len(), n);
    assert_eq!(ids.len(), n);
}

#[test]
fn number_entities_only_with_control() {
    let off = entities(&config("", &["can0"]));
    assert!(
        !off.iter()
            .any(|e| e.topic.contains("/number/") || e.topic.contains("/button/"))
    );
    let on = entities(&config("CONTROL-ACTIVATED = true", &["can0"]));
    let p = find(&on, "homeassistant/number/home_bms/setpoint_i_lim_charge/config");
    assert_eq!(p["command_topic"], "home/bms/set/i_lim_charge");
    assert_eq!(p["state_topic"], "home/bms/setpoints");
    assert_eq!(p["min"], 0);
    assert_eq!(p["max"], 100.0);
    assert_eq!(p["unit_of_measurement"], "A");
    assert_eq!(p["device_class"], "current");
    assert_eq!(
        p["value_template"],
        "{{ value_json.system.i_lim_charge.value if value_json.system.i_lim_charge else 100 }}"
    );
    let p = find(
        &on,
        "homeassistant/number/home_bms/inverter_inv0_setpoint_i_lim_discharge/config",
    );
    assert_eq!(p["command_topic"], "home/bms/inverter/1/set/i_lim_discharge");
    assert_eq!(p["max"], 80.0);
    let p = find(&on, "homeassistant/button/home_bms/setpoint_i_lim_charge_clear/config");
    assert_eq!(p["command_topic"], "home/bms/set/i_lim_charge");
    assert_eq!(p["payload_press"], "clear");
}

#[test]
fn custom_prefix_and_discovery_off() {
    let c = config("HA-DISCOVERY-PREFIX = \"ha\"", &["can0"]);
    assert!(entities(&c).iter().all(|e| e.topic.starts_with("ha/")));
    assert!(entities(&config("HA-DISCOVERY = false", &["can0"])).is_empty());
}

#[test]
fn stale_entities_are_ours_and_not_in_the_list() {
    let c = config("", &["can0"]);
    let all = entities(&c);
    assert!(is_stale(
        &c,
        "homeassistant/sensor/home_bms/battery_can1_soc/config",
        &all
    ));
    assert!(is_stale(
        &c,
        "homeassistant/number/home_bms/setpoint_i_lim_charge/config",
        &all
    ));
    assert!(!is_stale(
        &c,
        "homeassistant/sensor/home_bms/battery_can0_soc/config",
        &all
    ));
    assert!(!is_stale(
        &c,
        "homeassistant/sensor/other_gw/battery_can1_soc/config",
        &all
    ));
    assert!(!is_stale(&c, "homeassistant/status", &all));
    assert!(!is_stale(&c, "elsewhere/sensor/home_bms/x/config", &all));
}

#[test]
fn limit_reasons_overshoot_and_each_batterys_share_are_published() {
    let c = config("", &["can0"]);
    let all = entities(&c);
    let p = find(&all, "homeassistant/sensor/home_bms/limit_reason_charge/config");
    assert_eq!(p["name"], "Charge limit reason");
    assert_eq!(p["state_topic"], "tele/bms");
    assert_eq!(
        p["value_template"],
        "{{ value_json.limit_reason_charge }}{{ ' (battery ' ~ value_json.limit_battery_charge ~ ')' if value_json.limit_battery_charge else '' }}"
    );
    assert!(p.get("unit_of_measurement").is_none(), "a text sensor");
    let p = find(&all, "homeassistant/sensor/home_bms/limit_reason_discharge/config");
    assert_eq!(p["unique_id"], "home_bms_limit_reason_discharge");
    let p = find(&all, "homeassistant/binary_sensor/home_bms/overshoot/config");
    assert_eq!(p["device_class"], "problem");
    assert_eq!(
        p["value_template"],
        "{{ 'ON' if value_json.overshoot_charge or value_json.overshoot_discharge else 'OFF' }}"
    );
    let p = find(&all, "homeassistant/sensor/home_bms/battery_can0_share/config");
    assert_eq!(p["state_topic"], "home/bms/battery/1/state");
    assert_eq!(p["value_template"], "{{ value_json.share }}");
    let p = find(
        &all,
        "homeassistant/binary_sensor/home_bms/battery_can0_over_current/config",
    );
    assert_eq!(p["device_class"], "problem");
    assert_eq!(p["value_template"], "{{ 'ON' if value_json.over_current else 'OFF' }}");
}
