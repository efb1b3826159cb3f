//! Discovery tests: topics, device classes, units and state classes, and
//! whole payloads (availability, device blocks, origin, templates) written
//! out by hand from Home Assistant's MQTT discovery documentation; the
//! stale-entity rule; what is renewed when a BMS name is learned.

use super::*;
use crate::config_text::ConfigText;
use serde_json::json;

/// The availability entry of the gateway's status, as Home Assistant's
/// `availability` list takes it.
fn gateway_available() -> Value {
    json!({"topic": "home/bms/status", "payload_available": "online", "payload_not_available": "offline"})
}

fn config(extra_mqtt: &str, batteries: &[&str]) -> Config {
    let mut text = ConfigText::new().battery("I-LIM-CHARGE = 100\nI-LIM-DISCHARGE = 120");
    for (n, b) in batteries.iter().enumerate() {
        // The first battery has a description, the others none.
        let description = if n == 0 { "rack A" } else { "" };
        text = text.input(b, 100.0, &format!("DESCRIPTION = \"{description}\""));
    }
    let text = text
        .output("inv0", "I-LIM-CHARGE = 60\nI-LIM-DISCHARGE = 80")
        .output("inv1", "DESCRIPTION = \"hybrid\"")
        .mqtt("BASE-TOPIC = \"home/bms\"\nTOPIC = \"tele/bms\"")
        .mqtt(extra_mqtt)
        .text();
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
    #[rustfmt::skip]
    let cases = [
        ("soc", Some("battery"), Some("%"), Some("measurement"), "{{ value_json.soc }}"),
        ("soh", None, Some("%"), Some("measurement"), "{{ value_json.soh }}"),
        ("v_avg", Some("voltage"), Some("V"), Some("measurement"), "{{ value_json.v_avg }}"),
        ("i_total", Some("current"), Some("A"), Some("measurement"), "{{ value_json.i_total }}"),
        ("power_w", Some("power"), Some("W"), Some("measurement"), "{{ value_json.power_w }}"),
        ("t_avg", Some("temperature"), Some("°C"), Some("measurement"), "{{ value_json.t_avg }}"),
        ("capacity_ah", None, Some("Ah"), Some("measurement"), "{{ value_json.capacity_ah }}"),
        ("i_lim_charge", Some("current"), Some("A"), Some("measurement"), "{{ value_json.i_lim_charge }}"),
        ("v_charge_cmd", Some("voltage"), Some("V"), Some("measurement"), "{{ value_json.v_charge_cmd }}"),
        ("n_invalid_data_telegrams", None, None, Some("total_increasing"), "{{ value_json.n_invalid_data_telegrams }}"),
    ];
    for (field, class, unit, state_class, template) in cases {
        let p = find(&all, &format!("homeassistant/sensor/home_bms/{field}/config"));
        assert_eq!(p["device_class"].as_str(), class, "{field}");
        assert_eq!(p["unit_of_measurement"].as_str(), unit, "{field}");
        assert_eq!(p["state_class"].as_str(), state_class, "{field}");
        assert_eq!(p["state_topic"], "tele/bms");
        assert_eq!(p["value_template"], template, "{field}");
        assert_eq!(p["unique_id"], format!("home_bms_{field}"));
        assert_eq!(p["availability"], json!([gateway_available()]));
        assert_eq!(p["availability_mode"], "all");
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
        "{{ none if value_json.error_flags_1 is none else ('ON' if value_json.error_flags_1 | bitwise_and(2) > 0 else 'OFF') }}"
    );
    let p = find(
        &all,
        "homeassistant/binary_sensor/home_bms/alarm_internal_communication/config",
    );
    assert_eq!(
        p["value_template"],
        "{{ none if value_json.warning_flags_2 is none else ('ON' if value_json.warning_flags_2 | bitwise_and(8) > 0 else 'OFF') }}"
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
    assert_eq!(p["device"]["name"], "Battery 2");
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
    assert!(
        p.get("command_template").is_none(),
        "bare numbers: SETPOINT-TTL applies"
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

/// The `origin` every payload carries (Cargo.toml names no repository, so
/// there is no support URL).
fn origin_block() -> Value {
    json!({"name": "bms-gateway", "sw_version": env!("CARGO_PKG_VERSION")})
}

fn system_device() -> Value {
    json!({
        "identifiers": ["bms_gateway_home_bms"],
        "name": "BMS gateway home/bms",
        "manufacturer": "bms-gateway",
        "model": "virtual battery of 2 BMS, 2 inverters",
        "sw_version": env!("CARGO_PKG_VERSION"),
    })
}

#[test]
fn a_system_sensor_payload_field_by_field() {
    let all = entities(&config("", &["can0", "can1"]));
    let p = find(&all, "homeassistant/sensor/home_bms/soc/config");
    let want = json!({
        "state_topic": "tele/bms",
        "value_template": "{{ value_json.soc }}",
        "device_class": "battery",
        "unit_of_measurement": "%",
        "state_class": "measurement",
        "name": "State of charge",
        "unique_id": "home_bms_soc",
        "device": system_device(),
        "origin": origin_block(),
        "availability": [gateway_available()],
        "availability_mode": "all",
    });
    assert_eq!(p, &want);
}

#[test]
fn a_battery_value_is_unavailable_while_the_battery_is_not_fresh() {
    let all = entities(&config("", &["can0", "can1"]));
    let p = find(&all, "homeassistant/sensor/home_bms/battery_can0_v_avg/config");
    let want = json!({
        "state_topic": "home/bms/battery/1/state",
        "value_template": "{{ value_json.v_avg }}",
        "device_class": "voltage",
        "unit_of_measurement": "V",
        "state_class": "measurement",
        // The device name is the description alone: Home Assistant shows
        // "rack A Voltage".
        "name": "Voltage",
        "unique_id": "home_bms_battery_can0_v_avg",
        "device": {
            "identifiers": ["bms_gateway_home_bms_battery_can0"],
            "name": "rack A",
            "model": "Pylontech-protocol BMS",
            "via_device": "bms_gateway_home_bms",
        },
        "origin": origin_block(),
        "availability": [
            gateway_available(),
            {
                "topic": "home/bms/battery/1/state",
                "value_template": "{{ 'online' if value_json.online else 'offline' }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            },
        ],
        "availability_mode": "all",
    });
    assert_eq!(p, &want);
    // Whether it is online, its link and its error count stay available.
    for object in [
        "binary_sensor/home_bms/battery_can1_online",
        "sensor/home_bms/battery_can1_link",
        "sensor/home_bms/battery_can1_invalid",
    ] {
        let p = find(&all, &format!("homeassistant/{object}/config"));
        assert_eq!(p["availability"], json!([gateway_available()]), "{object}");
    }
    let online = find(&all, "homeassistant/binary_sensor/home_bms/battery_can1_online/config");
    assert_eq!(online["device"]["name"], "Battery 2");
    assert_eq!(
        online["value_template"],
        "{{ none if value_json.online is none else ('ON' if value_json.online else 'OFF') }}"
    );
    let link = find(&all, "homeassistant/sensor/home_bms/battery_can1_link/config");
    assert_eq!(link["device_class"], "enum");
    assert_eq!(link["options"], json!(["opening", "up", "down", "recovering"]));
    assert_eq!(link["entity_category"], "diagnostic");
    // Every battery value has both entries.
    let values: Vec<&Entity> = all
        .iter()
        .filter(|e| e.topic.contains("/battery_can0_"))
        .filter(|e| {
            !["online", "link", "invalid"]
                .iter()
                .any(|o| e.topic.contains(&format!("_{o}/")))
        })
        .collect();
    assert!(values.len() > 20, "{}", values.len());
    for e in values {
        assert_eq!(e.payload["availability"].as_array().unwrap().len(), 2, "{}", e.topic);
    }
}

#[test]
fn binary_sensors_are_unknown_while_their_value_is_null() {
    let all = entities(&config("", &["can0"]));
    let cases = [
        (
            "binary_sensor/home_bms/charge_enable",
            "{{ none if value_json.charge_enable is none else ('ON' if value_json.charge_enable else 'OFF') }}",
        ),
        (
            "binary_sensor/home_bms/battery_can0_discharge_enable",
            "{{ none if value_json.discharge_enable is none else ('ON' if value_json.discharge_enable else 'OFF') }}",
        ),
        (
            "binary_sensor/home_bms/protection",
            "{{ none if value_json.error_flags_1 is none or value_json.error_flags_2 is none else ('ON' if value_json.error_flags_1 > 0 or value_json.error_flags_2 > 0 else 'OFF') }}",
        ),
        (
            "binary_sensor/home_bms/battery_can0_alarm",
            "{{ none if value_json.warning_flags_1 is none or value_json.warning_flags_2 is none else ('ON' if value_json.warning_flags_1 > 0 or value_json.warning_flags_2 > 0 else 'OFF') }}",
        ),
        (
            "binary_sensor/home_bms/force_charge_request",
            "{{ none if value_json.force_charge_request is none or value_json.force_charge_request_2 is none else ('ON' if value_json.force_charge_request or value_json.force_charge_request_2 else 'OFF') }}",
        ),
        (
            "binary_sensor/home_bms/alarm_high_temperature",
            "{{ none if value_json.warning_flags_1 is none else ('ON' if value_json.warning_flags_1 | bitwise_and(8) > 0 else 'OFF') }}",
        ),
    ];
    for (object, template) in cases {
        let p = find(&all, &format!("homeassistant/{object}/config"));
        assert_eq!(p["value_template"], template, "{object}");
        assert_eq!((&p["payload_on"], &p["payload_off"]), (&json!("ON"), &json!("OFF")));
    }
}

#[test]
fn stored_energy_is_an_energy_storage_sensor() {
    let all = entities(&config("", &["can0"]));
    for (object, topic) in [
        ("energy_stored_kwh", "tele/bms"),
        ("battery_can0_energy_stored_kwh", "home/bms/battery/1/state"),
    ] {
        let p = find(&all, &format!("homeassistant/sensor/home_bms/{object}/config"));
        assert_eq!(p["device_class"], "energy_storage");
        assert_eq!(p["unit_of_measurement"], "kWh");
        assert_eq!(p["state_class"], "measurement");
        assert_eq!(p["state_topic"], topic);
        assert_eq!(p["value_template"], "{{ value_json.energy_stored_kwh }}");
        assert_eq!(p["name"], "Stored energy");
    }
}

#[test]
fn every_inverter_is_a_device_of_its_own() {
    let all = entities(&config("CONTROL-ACTIVATED = true", &["can0"]));
    let p = find(&all, "homeassistant/sensor/home_bms/inverter_inv1_i_lim_charge/config");
    let want = json!({
        "state_topic": "home/bms/inverter/2/state",
        "value_template": "{{ value_json.i_lim_charge }}",
        "device_class": "current",
        "unit_of_measurement": "A",
        "state_class": "measurement",
        "name": "Charge current limit",
        "unique_id": "home_bms_inverter_inv1_i_lim_charge",
        "device": {
            "identifiers": ["bms_gateway_home_bms_inverter_inv1"],
            "name": "hybrid",
            "model": "inverter on inv1 (virtual BMS)",
            "via_device": "bms_gateway_home_bms",
        },
        "origin": origin_block(),
        "availability": [gateway_available()],
        "availability_mode": "all",
    });
    assert_eq!(p, &want);
    let p = find(&all, "homeassistant/sensor/home_bms/inverter_inv0_sync_age_s/config");
    assert_eq!(p["device"]["name"], "Inverter 1");
    assert_eq!(p["device_class"], "duration");
    assert_eq!(p["unit_of_measurement"], "s");
    assert_eq!(p["entity_category"], "diagnostic");
    let p = find(&all, "homeassistant/sensor/home_bms/inverter_inv0_state/config");
    assert_eq!(p["options"], json!(["ok", "degraded", "safe"]));
    let p = find(&all, "homeassistant/sensor/home_bms/inverter_inv0_send_errors/config");
    assert_eq!(p["state_class"], "total_increasing");
    // Its setpoints are on its device too.
    let p = find(
        &all,
        "homeassistant/number/home_bms/inverter_inv0_setpoint_i_lim_charge/config",
    );
    assert_eq!(p["name"], "Charge current setpoint");
    assert_eq!(
        p["device"]["identifiers"],
        json!(["bms_gateway_home_bms_inverter_inv0"])
    );
    // No inverter entity is left on the system device.
    assert!(
        all.iter()
            .filter(|e| e.topic.contains("/inverter_"))
            .all(|e| e.payload["device"]["identifiers"][0] != "bms_gateway_home_bms")
    );
}

#[test]
fn setpoint_active_and_expires_per_limit() {
    let all = entities(&config("CONTROL-ACTIVATED = true", &["can0", "can1"]));
    let p = find(
        &all,
        "homeassistant/binary_sensor/home_bms/setpoint_i_lim_discharge_active/config",
    );
    let want = json!({
        "state_topic": "home/bms/setpoints",
        "value_template": "{{ 'ON' if value_json.system.i_lim_discharge else 'OFF' }}",
        "payload_on": "ON",
        "payload_off": "OFF",
        "name": "Discharge current setpoint active",
        "unique_id": "home_bms_setpoint_i_lim_discharge_active",
        "device": system_device(),
        "origin": origin_block(),
        "availability": [gateway_available()],
        "availability_mode": "all",
    });
    assert_eq!(p, &want);
    let p = find(
        &all,
        "homeassistant/sensor/home_bms/inverter_inv1_setpoint_i_lim_charge_expires/config",
    );
    assert_eq!(p["state_topic"], "home/bms/setpoints");
    assert_eq!(p["device_class"], "timestamp");
    assert_eq!(p["name"], "Charge current setpoint expires");
    assert_eq!(
        p["value_template"],
        "{{ as_datetime(value_json.inverters[1].i_lim_charge.expires) if value_json.inverters[1].i_lim_charge and value_json.inverters[1].i_lim_charge.expires is not none else none }}"
    );
    assert!(p.get("unit_of_measurement").is_none() && p.get("state_class").is_none());
    // Four limits (system and two inverters, charge and discharge): four
    // entities each.
    for kind in ["number", "button", "binary_sensor", "sensor"] {
        let n = all
            .iter()
            .filter(|e| e.topic.starts_with(&format!("homeassistant/{kind}/")) && e.topic.contains("setpoint_i_lim"))
            .count();
        assert_eq!(n, 6, "{kind}");
    }
    let off = entities(&config("", &["can0"]));
    assert!(!off.iter().any(|e| e.topic.contains("setpoint_")));
}

#[test]
fn ha_setpoint_ttl_sends_the_value_with_its_lifetime() {
    let all = entities(&config("CONTROL-ACTIVATED = true\nHA-SETPOINT-TTL = 900", &["can0"]));
    for object in ["setpoint_i_lim_charge", "inverter_inv0_setpoint_i_lim_discharge"] {
        let p = find(&all, &format!("homeassistant/number/home_bms/{object}/config"));
        assert_eq!(
            p["command_template"], r#"{"value": {{ value }}, "ttl": 900}"#,
            "{object}"
        );
    }
}

#[test]
fn every_payload_names_its_origin_and_has_the_availability_list() {
    let all = entities(&config("CONTROL-ACTIVATED = true", &["can0", "can1"]));
    for e in &all {
        assert_eq!(e.payload["origin"], origin_block(), "{}", e.topic);
        assert_eq!(e.payload["availability_mode"], "all", "{}", e.topic);
        assert_eq!(e.payload["availability"][0], gateway_available(), "{}", e.topic);
        assert!(e.payload.get("availability_topic").is_none(), "{}", e.topic);
    }
}

#[test]
fn system_device_names() {
    assert_eq!(system_name("bms_gateway"), "BMS gateway");
    assert_eq!(system_name("bms_gateway_demo"), "BMS gateway demo");
    assert_eq!(system_name("bms_gateway/garage"), "BMS gateway garage");
    assert_eq!(system_name("home/bms"), "BMS gateway home/bms");
    assert_eq!(system_name("bms_gatewayX"), "BMS gateway bms_gatewayX");
}

#[test]
fn a_learned_bms_name_becomes_the_manufacturer_and_renews_only_that_battery() {
    let c = config("", &["can0", "can1"]);
    let before = entities(&c);
    let mut learned = Learned::default();
    assert!(!learned.learn([None, None]));
    assert!(learned.learn([None, Some("PYLON   ".to_string())]));
    assert_eq!(learned.bms_names, vec![None, Some("PYLON".to_string())]);
    // The same name again, or silence, changes nothing.
    assert!(!learned.learn([None, Some("PYLON".to_string())]));
    assert!(!learned.learn([None, None]));
    let after = entities_with(&c, &learned);
    let renewed = changed(&before, &after);
    assert!(!renewed.is_empty());
    for e in &renewed {
        assert!(e.topic.contains("/battery_can1_"), "{}", e.topic);
        assert_eq!(e.payload["device"]["manufacturer"], "PYLON");
    }
    let battery_2 = after.iter().filter(|e| e.topic.contains("/battery_can1_")).count();
    assert_eq!(renewed.len(), battery_2);
    let p = find(&after, "homeassistant/sensor/home_bms/battery_can0_soc/config");
    assert!(p["device"].get("manufacturer").is_none());
}

#[test]
fn energy_sensors_fit_the_energy_dashboard_for_the_system_and_each_battery() {
    let c = config("", &["can0"]);
    let all = entities(&c);
    for (object, state_topic) in [
        ("energy_charged_kwh", "tele/bms"),
        ("energy_discharged_kwh", "tele/bms"),
        ("battery_can0_energy_charged_kwh", "home/bms/battery/1/state"),
        ("battery_can0_energy_discharged_kwh", "home/bms/battery/1/state"),
    ] {
        let p = find(&all, &format!("homeassistant/sensor/home_bms/{object}/config"));
        assert_eq!(p["device_class"], "energy", "{object}");
        assert_eq!(p["state_class"], "total_increasing", "{object}");
        assert_eq!(p["unit_of_measurement"], "kWh", "{object}");
        assert_eq!(p["state_topic"], state_topic, "{object}");
    }
}

#[test]
fn events_are_an_event_entity_of_the_system() {
    let c = config("", &["can0"]);
    let all = entities(&c);
    let p = find(&all, "homeassistant/event/home_bms/event/config");
    assert_eq!(p["state_topic"], "home/bms/event");
    let types = p["event_types"].as_array().unwrap();
    for kind in [
        "battery_lost",
        "battery_back",
        "state_changed",
        "setpoint_expired",
        "config_rejected",
    ] {
        assert!(types.iter().any(|t| t == kind), "{kind}");
    }
    // Home Assistant wants the kind under event_type.
    let template = p["value_template"].as_str().unwrap();
    assert!(template.contains("'event_type': value_json.kind"), "{template}");
    assert!(template.ends_with("| to_json }}"), "{template}");
}

#[test]
fn the_status_page_is_linked_only_when_home_assistant_can_reach_it() {
    let system_device = |c: &Config| find(&entities(c), "homeassistant/sensor/home_bms/soc/config")["device"].clone();
    // The default (127.0.0.1) and "0.0.0.0" give no link.
    assert!(system_device(&config("", &["can0"])).get("configuration_url").is_none());
    let mut c = config("", &["can0"]);
    c.http.listen = "0.0.0.0:8080".parse().unwrap();
    assert!(system_device(&c).get("configuration_url").is_none());
    c.http.listen = "192.168.1.20:8080".parse().unwrap();
    assert_eq!(system_device(&c)["configuration_url"], "http://192.168.1.20:8080/");
    c.http.activated = false;
    assert!(system_device(&c).get("configuration_url").is_none());
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
        "{{ none if value_json.overshoot_charge is none or value_json.overshoot_discharge is none else ('ON' if value_json.overshoot_charge or value_json.overshoot_discharge else 'OFF') }}"
    );
    let p = find(&all, "homeassistant/sensor/home_bms/battery_can0_share/config");
    assert_eq!(p["state_topic"], "home/bms/battery/1/state");
    assert_eq!(p["value_template"], "{{ value_json.share }}");
    let p = find(
        &all,
        "homeassistant/binary_sensor/home_bms/battery_can0_over_current/config",
    );
    assert_eq!(p["device_class"], "problem");
    assert_eq!(
        p["value_template"],
        "{{ none if value_json.over_current is none else ('ON' if value_json.over_current else 'OFF') }}"
    );
}

#[test]
fn the_charge_stop_soc_is_a_number_entity_in_percent_only_with_control() {
    let off = entities(&config("", &["can0"]));
    assert!(!off.iter().any(|e| e.topic.contains("charge_stop_soc")));
    let on = entities(&config("CONTROL-ACTIVATED = true", &["can0"]));
    let p = find(&on, "homeassistant/number/home_bms/setpoint_charge_stop_soc/config");
    assert_eq!(p["command_topic"], "home/bms/set/charge_stop_soc");
    assert_eq!(p["state_topic"], "home/bms/setpoints");
    assert_eq!((p["min"].as_f64(), p["max"].as_f64()), (Some(0.0), Some(100.0)));
    assert_eq!(p["unit_of_measurement"], "%");
    assert_eq!(
        p["value_template"],
        "{{ value_json.system.charge_stop_soc.value if value_json.system.charge_stop_soc else 100 }}"
    );
    let p = find(
        &on,
        "homeassistant/button/home_bms/setpoint_charge_stop_soc_clear/config",
    );
    assert_eq!(p["command_topic"], "home/bms/set/charge_stop_soc");
    assert_eq!(p["payload_press"], "clear");
}

#[test]
fn each_battery_has_its_cell_difference_and_min_max() {
    let all = entities(&config("", &["can0"]));
    let delta = find(&all, "homeassistant/sensor/home_bms/battery_can0_cell_v_delta/config");
    assert_eq!(delta["value_template"], "{{ value_json.cell_v_delta }}");
    assert_eq!(delta["state_topic"], "home/bms/battery/1/state");
    assert_eq!(
        (delta["device_class"].as_str(), delta["unit_of_measurement"].as_str()),
        (Some("voltage"), Some("V"))
    );
    assert_eq!(delta["name"], "Cell voltage difference");
    // The lowest and highest cell are the battery's v_cell_min / v_cell_max
    // sensors (the same values as cell_v_min / cell_v_max).
    for (field, name) in [
        ("v_cell_min", "Lowest cell voltage"),
        ("v_cell_max", "Highest cell voltage"),
    ] {
        let p = find(
            &all,
            &format!("homeassistant/sensor/home_bms/battery_can0_{field}/config"),
        );
        assert_eq!(p["name"], name);
    }
    // No cell entity before any is heard, and none without HA-CELL-ENTITIES.
    assert!(!all.iter().any(|e| e.topic.contains("_cells_")));
}

fn fifteen_and_five() -> CellCount {
    CellCount {
        cells: 15,
        temperatures: 5,
    }
}

#[test]
fn cell_entities_only_with_ha_cell_entities_and_for_the_cells_heard() {
    let mut learned = Learned::default();
    assert!(!learned.learn_cells([None, None]));
    assert!(learned.learn_cells([None, Some(fifteen_and_five())]));
    assert!(!learned.learn_cells([None, Some(fifteen_and_five())]));
    // A silent battery keeps what it reported.
    assert!(!learned.learn_cells([None, None]));
    let off = config("", &["can0", "can1"]);
    assert!(
        !entities_with(&off, &learned)
            .iter()
            .any(|e| e.topic.contains("_cells_"))
    );

    let on = config("HA-CELL-ENTITIES = true", &["can0", "can1"]);
    let before = entities(&on);
    let after = entities_with(&on, &learned);
    let cells: Vec<&Entity> = after
        .iter()
        .filter(|e| e.topic.contains("/battery_can1_cells_"))
        .collect();
    // 15 voltages and 5 temperatures, battery 2's only.
    assert_eq!(cells.len(), 20);
    assert!(!after.iter().any(|e| e.topic.contains("/battery_can0_cells_")));
    let renewed = changed(&before, &after);
    assert_eq!(renewed.len(), 20);
    let v15 = find(&after, "homeassistant/sensor/home_bms/battery_can1_cells_v_15/config");
    assert_eq!(v15["name"], "Cell 15 voltage");
    assert_eq!(
        v15["value_template"],
        "{{ value_json.cells_v[14] if value_json.cells_v is not none and value_json.cells_v | length > 14 else none }}"
    );
    assert_eq!(
        (v15["device_class"].as_str(), v15["unit_of_measurement"].as_str()),
        (Some("voltage"), Some("V"))
    );
    assert_eq!(v15["unique_id"], "home_bms_battery_can1_cells_v_15");
    // Unavailable while the battery is stale, like its other values.
    assert_eq!(v15["availability"].as_array().unwrap().len(), 2);
    let t5 = find(&after, "homeassistant/sensor/home_bms/battery_can1_cells_t_5/config");
    assert_eq!(t5["name"], "Temperature sensor 5");
    assert_eq!(t5["device_class"], "temperature");
    assert!(t5["value_template"].as_str().unwrap().contains("value_json.cells_t[4]"));
    assert!(
        !after
            .iter()
            .any(|e| e.topic.contains("cells_v_16") || e.topic.contains("cells_t_6"))
    );
}

#[test]
fn cell_entities_of_a_configured_battery_are_not_stale_while_the_key_is_on() {
    let topic = "homeassistant/sensor/home_bms/battery_can0_cells_v_3/config";
    // After a start the list has no cell entity yet.
    let on = config("HA-CELL-ENTITIES = true", &["can0"]);
    assert!(!is_stale(&on, topic, &entities(&on)));
    // A removed battery's, or all of them with the key off, are removed.
    assert!(is_stale(
        &on,
        "homeassistant/sensor/home_bms/battery_can9_cells_v_3/config",
        &entities(&on)
    ));
    let off = config("", &["can0"]);
    assert!(is_stale(&off, topic, &entities(&off)));
}
