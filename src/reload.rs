//! What a configuration reload keeps: which sections of the new
//! configuration are the same interfaces as sections of the running one
//! (docs/reload.md).
//!
//! Pure: the shell, the status board, the combiner and the setpoints all
//! take the same [`Mapping`], so "the same battery" and "the same inverter"
//! are decided once, by CAN-IF.

use crate::config::Config;

/// For each section of the new configuration, the position of the section
/// with the same CAN-IF in the running one, if any.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapping {
    /// `[[bmses-in]]`, in the new file's order.
    pub inputs: Vec<Option<usize>>,
    /// `[[bmses-out]]`, in the new file's order.
    pub outputs: Vec<Option<usize>>,
}

impl Mapping {
    /// Matches `new` against `old` by CAN-IF (batteries with batteries,
    /// inverters with inverters).
    pub fn between(old: &Config, new: &Config) -> Mapping {
        Mapping {
            inputs: by_name(
                old.inputs.iter().map(|i| i.can_if.as_str()),
                new.inputs.iter().map(|i| i.can_if.as_str()),
            ),
            outputs: by_name(
                old.outputs.iter().map(|o| o.can_if.as_str()),
                new.outputs.iter().map(|o| o.can_if.as_str()),
            ),
        }
    }

    /// Every section kept in place: the mapping of a configuration onto itself.
    pub fn identity(config: &Config) -> Mapping {
        Mapping {
            inputs: (0..config.inputs.len()).map(Some).collect(),
            outputs: (0..config.outputs.len()).map(Some).collect(),
        }
    }

    /// The running inverters (by old position) that the new configuration no
    /// longer has, out of `old_count`.
    pub fn removed_outputs(&self, old_count: usize) -> Vec<usize> {
        removed(&self.outputs, old_count)
    }

    /// The running batteries (by old position) that the new configuration no
    /// longer has, out of `old_count`.
    pub fn removed_inputs(&self, old_count: usize) -> Vec<usize> {
        removed(&self.inputs, old_count)
    }
}

fn by_name<'a>(old: impl Iterator<Item = &'a str> + Clone, new: impl Iterator<Item = &'a str>) -> Vec<Option<usize>> {
    new.map(|name| old.clone().position(|o| o == name)).collect()
}

fn removed(mapped: &[Option<usize>], old_count: usize) -> Vec<usize> {
    (0..old_count).filter(|o| !mapped.contains(&Some(*o))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_text::ConfigText;

    fn config(inputs: &[&str], outputs: &[&str]) -> Config {
        let text = ConfigText::new().mqtt("ACTIVATED = false");
        let text = inputs.iter().fold(text, |t, i| t.input(i, 100.0, ""));
        let text = outputs.iter().fold(text, |t, o| t.output(o, ""));
        crate::config::parse(&text.text()).expect("valid")
    }

    #[test]
    fn sections_match_by_can_if_whatever_their_order() {
        let old = config(&["can0", "can1", "can2"], &["inv0", "inv1"]);
        let new = config(&["can2", "can3", "can0"], &["inv1"]);
        let m = Mapping::between(&old, &new);
        assert_eq!(m.inputs, [Some(2), None, Some(0)]);
        assert_eq!(m.outputs, [Some(1)]);
        assert_eq!(m.removed_inputs(3), [1]);
        assert_eq!(m.removed_outputs(2), [0]);
    }

    #[test]
    fn a_battery_interface_never_matches_an_inverter_one() {
        let old = config(&["can0"], &["can1"]);
        let new = config(&["can1"], &["can0"]);
        let m = Mapping::between(&old, &new);
        assert_eq!(m.inputs, [None]);
        assert_eq!(m.outputs, [None]);
    }

    #[test]
    fn identity_keeps_everything() {
        let c = config(&["can0", "can1"], &["inv0"]);
        assert_eq!(Mapping::identity(&c), Mapping::between(&c, &c));
        assert!(Mapping::identity(&c).removed_inputs(2).is_empty());
    }
}
