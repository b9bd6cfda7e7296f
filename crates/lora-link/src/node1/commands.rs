//! Node 1's side of the downlink (`docs/PROTOCOL.md`, "Downlink"): which command to apply,
//! what its next uplink says back, when to restart. Pure rules, no I/O; the firmware applies
//! the commands, keeps [`Commands::save`]'s words in RAM that a reset does not clear, and
//! stores the interval and the boot count in flash (`crate::counter_log`).
//!
//! - A command rides in the sealed ACK of Node 1's uplink ([`crate::secure::open_ack_with`]):
//!   only the ACK that answers the frame in flight carries one Node 1 takes.
//! - Each command number is applied at most once: Node 1 remembers the last [`REMEMBERED`]
//!   numbers it applied, across a software reset too, so that a `reboot` is not applied again
//!   after the reboot it caused. A number it remembers is confirmed again, not applied again
//!   (the gateway sends a command until it hears the confirmation).
//! - The confirmation rides in every uplink from the next one on, until an ACK of an uplink
//!   that carried it arrives; a newer command's confirmation takes its place. The next
//!   uplink goes at once, not at the next slot ([`confirm_at_once`]), so a command is
//!   confirmed within one uplink interval of reaching the gateway (plus the exchange).
//!   Never twice in a row: a gateway that kept sending commands cannot keep the node on air.
//! - The node's info rides in the first uplink after every boot and in the next one after a
//!   `ping`, again until an ACK of an uplink that carried it arrives.
//! - `reboot` restarts the node once the uplink carrying its confirmation is done with
//!   (acknowledged, or its attempts ran out); the confirmation still due is kept across the
//!   restart and rides in the first uplink after it.

use crate::downlink::{Extras, Kind, NodeCommand, NodeInfo};

/// Command numbers Node 1 remembers having applied.
pub const REMEMBERED: usize = 8;
/// Words of [`Commands::save`].
pub const SAVED_WORDS: usize = 8;
/// The first saved word: what Node 1 saved, not what RAM held at power-up.
const MAGIC: u32 = 0x434D_4431;

/// `NodeInfo::reset`: why the node last started.
pub mod reset {
    /// Not known (a reset pin, or no reset flag: QEMU).
    pub const UNKNOWN: u8 = 0;
    /// Power-on or brown-out.
    pub const POWER_ON: u8 = 1;
    /// A software reset: the `reboot` command.
    pub const SOFTWARE: u8 = 2;
    /// A watchdog.
    pub const WATCHDOG: u8 = 3;
    /// A panic (the firmware resets itself after logging it).
    pub const PANIC: u8 = 4;
}

/// Why the node started, from the STM32F4's RCC_CSR reset flags (RM0390, 6.3.21), whether
/// the firmware marked a panic before resetting itself, and whether Node 1 saved a `reboot`
/// before the reset. A panic's reset is a software reset too: the mark tells them apart.
pub fn reset_reason(rcc_csr: u32, panicked: bool, rebooted_by_command: bool) -> u8 {
    const PORRSTF_BORRSTF: u32 = (1 << 27) | (1 << 25);
    const SFTRSTF: u32 = 1 << 28;
    const IWDG_WWDG: u32 = (1 << 29) | (1 << 30);
    if rcc_csr & IWDG_WWDG != 0 {
        reset::WATCHDOG
    } else if panicked {
        reset::PANIC
    } else if rebooted_by_command || rcc_csr & SFTRSTF != 0 {
        reset::SOFTWARE
    } else if rcc_csr & PORRSTF_BORRSTF != 0 {
        reset::POWER_ON
    } else {
        reset::UNKNOWN
    }
}

/// Whether the next uplink goes at once, not at the next slot: after an ACK that brought a
/// command (`verdict` of [`Commands::on_ack`]), unless the uplink it answered went at once
/// already (`this_went_at_once`).
pub fn confirm_at_once(verdict: Verdict, this_went_at_once: bool) -> bool {
    !matches!(verdict, Verdict::Nothing) && !this_went_at_once
}

/// A check word over `words` (not cryptographic: it tells saved words from what RAM holds
/// after a power-up).
pub fn check_word(words: &[u32]) -> u32 {
    words.iter().fold(0x811C_9DC5, |h, w| {
        (h ^ w).wrapping_mul(0x0100_0193).rotate_left(7)
    })
}

/// What a command in an ACK means for Node 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No command.
    Nothing,
    /// A new number: apply it (it is confirmed from the next uplink on).
    Apply(NodeCommand),
    /// A number applied before: confirmed again, not applied.
    Again(NodeCommand),
}

/// Node 1's command state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commands {
    /// The numbers applied last, `count` of them, the newest before `next` (a ring).
    applied: [u16; REMEMBERED],
    count: u8,
    next: u8,
    /// The number to confirm in every uplink until an ACK of one that carried it.
    confirm: Option<u16>,
    /// The info rides in the next uplinks.
    info_due: bool,
    /// A `reboot` applied: restart once its confirmation went out.
    reboot: Option<u16>,
    /// Saved just before a restart for `reboot`.
    rebooting: bool,
    /// The last start was the restart of a `reboot`.
    rebooted: bool,
}

impl Default for Commands {
    fn default() -> Self {
        Commands::new()
    }
}

impl Commands {
    /// A first start: nothing applied, the info due.
    pub const fn new() -> Commands {
        Commands {
            applied: [0; REMEMBERED],
            count: 0,
            next: 0,
            confirm: None,
            info_due: true,
            reboot: None,
            rebooting: false,
            rebooted: false,
        }
    }

    /// After a reset, from the words saved before it; a first start when they are not
    /// intact (a power-up: RAM holds anything). The info is due either way.
    pub fn restore(words: &[u32; SAVED_WORDS]) -> Commands {
        let [magic, a, b, c, d, flags, confirm, check] = *words;
        if magic != MAGIC || check != check_word(words.get(..7).unwrap_or_default()) {
            return Commands::new();
        }
        let mut applied = [0u16; REMEMBERED];
        for (pair, w) in applied.chunks_exact_mut(2).zip([a, b, c, d]) {
            if let [lo, hi] = pair {
                *lo = w as u16;
                *hi = (w >> 16) as u16;
            }
        }
        let bit = |n: u32| flags & (1 << n) != 0;
        Commands {
            applied,
            count: (flags & 0xFF).min(REMEMBERED as u32) as u8,
            next: ((flags >> 8) & 0xFF) as u8 % REMEMBERED as u8,
            confirm: bit(16).then_some(confirm as u16),
            info_due: true,
            reboot: None,
            rebooting: false,
            rebooted: bit(17),
        }
    }

    /// The words to keep across a reset (in RAM a reset does not clear).
    pub fn save(&self) -> [u32; SAVED_WORDS] {
        let pair = |i: usize| {
            let at = |k: usize| u32::from(self.applied.get(k).copied().unwrap_or(0));
            at(i) | (at(i + 1) << 16)
        };
        let flags = u32::from(self.count)
            | (u32::from(self.next) << 8)
            | (u32::from(self.confirm.is_some()) << 16)
            | (u32::from(self.rebooting) << 17);
        let confirm = u32::from(self.confirm.unwrap_or(0));
        let body = [MAGIC, pair(0), pair(2), pair(4), pair(6), flags, confirm];
        let [a, b, c, d, e, f, g] = body;
        [a, b, c, d, e, f, g, check_word(&body)]
    }

    /// Whether this start was the restart of a `reboot` command.
    pub fn rebooted_by_command(&self) -> bool {
        self.rebooted
    }

    /// Whether the next uplink carries the info.
    pub fn info_due(&self) -> bool {
        self.info_due
    }

    /// What the next uplink carries after its packet (`info`: the node's info now).
    pub fn extras(&self, info: NodeInfo) -> Extras {
        Extras {
            confirm: self.confirm,
            info: self.info_due.then_some(info),
        }
    }

    /// Whether number `n` was applied (among the last [`REMEMBERED`]).
    pub fn applied(&self, n: u16) -> bool {
        self.applied
            .iter()
            .take(usize::from(self.count))
            .any(|a| *a == n)
    }

    /// The ACK of an uplink that carried `sent` arrived, with `command` in it: what was
    /// carried is delivered, and the command is applied or confirmed again.
    pub fn on_ack(&mut self, sent: &Extras, command: Option<NodeCommand>) -> Verdict {
        if sent.confirm.is_some() && sent.confirm == self.confirm {
            self.confirm = None;
        }
        if sent.info.is_some() {
            self.info_due = false;
        }
        let Some(command) = command else {
            return Verdict::Nothing;
        };
        self.confirm = Some(command.number);
        if self.applied(command.number) {
            return Verdict::Again(command);
        }
        if let Some(slot) = self.applied.get_mut(usize::from(self.next)) {
            *slot = command.number;
        }
        self.next = (self.next + 1) % REMEMBERED as u8;
        self.count = (self.count + 1).min(REMEMBERED as u8);
        match command.kind {
            Kind::Ping => self.info_due = true,
            Kind::Reboot => self.reboot = Some(command.number),
            Kind::Interval(_) | Kind::Identify(_) => {}
        }
        Verdict::Apply(command)
    }

    /// An uplink that carried `sent` is done with (acknowledged, or its attempts ran out):
    /// `true` when the node must restart now (a `reboot` whose confirmation it carried).
    /// Save the words ([`Commands::save`]) after this call, before the restart.
    pub fn restart_now(&mut self, sent: &Extras) -> bool {
        let now = self.reboot.is_some() && sent.confirm == self.reboot;
        if now {
            self.rebooting = true;
        }
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: NodeInfo = NodeInfo {
        version: [0, 1, 0],
        boots: 3,
        uptime_s: 42,
        reset: reset::POWER_ON,
    };

    fn command(number: u16, kind: Kind) -> Option<NodeCommand> {
        Some(NodeCommand { number, kind })
    }

    #[test]
    fn after_a_boot_the_info_rides_until_an_uplink_carrying_it_is_acked() {
        let mut c = Commands::new();
        let first = c.extras(INFO);
        assert_eq!(
            first,
            Extras {
                confirm: None,
                info: Some(INFO)
            }
        );
        // The uplink is given up: the next carries the info again.
        assert_eq!(c.extras(INFO), first);
        assert_eq!(c.on_ack(&first, None), Verdict::Nothing);
        assert_eq!(c.extras(INFO), Extras::NONE);
        // An ACK of an uplink that did not carry it clears nothing.
        let mut d = Commands::new();
        assert_eq!(d.on_ack(&Extras::NONE, None), Verdict::Nothing);
        assert!(d.info_due());
    }

    #[test]
    fn a_command_is_applied_once_and_confirmed_until_its_confirmation_is_acked() {
        let mut c = Commands::new();
        c.on_ack(&c.extras(INFO), None);
        let interval = command(7, Kind::Interval(5));
        assert_eq!(
            c.on_ack(&Extras::NONE, interval),
            Verdict::Apply(interval.unwrap())
        );
        let carried = c.extras(INFO);
        assert_eq!(carried.confirm, Some(7));
        // The ACK of that uplink is lost and the gateway's resend comes in the next ACK,
        // of an uplink that carried the confirmation: confirmed again, not applied.
        assert_eq!(
            c.on_ack(&carried, interval),
            Verdict::Again(interval.unwrap())
        );
        assert_eq!(c.extras(INFO).confirm, Some(7));
        // The ACK of an uplink carrying it, with nothing in it: done.
        assert_eq!(c.on_ack(&carried, None), Verdict::Nothing);
        assert_eq!(c.extras(INFO), Extras::NONE);
        // An ACK of an uplink that carried an older confirmation does not clear a newer one.
        let ping = command(8, Kind::Ping);
        assert_eq!(c.on_ack(&Extras::NONE, ping), Verdict::Apply(ping.unwrap()));
        c.on_ack(&carried, None);
        let next = c.extras(INFO);
        assert_eq!(
            next,
            Extras {
                confirm: Some(8),
                info: Some(INFO)
            },
            "ping: the info and the confirmation"
        );
        assert_eq!(c.on_ack(&next, None), Verdict::Nothing);
        assert_eq!(c.extras(INFO), Extras::NONE);
    }

    #[test]
    fn a_command_is_confirmed_at_once_but_never_twice_in_a_row() {
        let mut c = Commands::new();
        let ping = command(1, Kind::Ping);
        let verdict = c.on_ack(&Extras::NONE, ping);
        assert!(confirm_at_once(verdict, false), "a new command");
        assert!(!confirm_at_once(verdict, true), "twice in a row");
        let again = c.on_ack(&c.extras(INFO), ping);
        assert_eq!(again, Verdict::Again(ping.unwrap()));
        assert!(
            confirm_at_once(again, false),
            "a resend is confirmed at once too"
        );
        assert!(!confirm_at_once(Verdict::Nothing, false), "no command");
    }

    #[test]
    fn the_last_eight_numbers_are_remembered() {
        let mut c = Commands::new();
        for n in 1..=9u16 {
            let id = command(n, Kind::Identify(1));
            assert_eq!(c.on_ack(&Extras::NONE, id), Verdict::Apply(id.unwrap()));
        }
        assert!(!c.applied(1), "forgotten: nine numbers since");
        assert!((2..=9).all(|n| c.applied(n)));
        let again = command(2, Kind::Identify(1));
        assert_eq!(
            c.on_ack(&Extras::NONE, again),
            Verdict::Again(again.unwrap())
        );
        assert!(!Commands::new().applied(0), "no number before any command");
    }

    #[test]
    fn a_reboot_restarts_after_its_confirmation_and_is_not_applied_again_after() {
        let mut c = Commands::new();
        let reboot = command(3, Kind::Reboot);
        assert_eq!(
            c.on_ack(&Extras::NONE, reboot),
            Verdict::Apply(reboot.unwrap())
        );
        assert!(
            !c.restart_now(&Extras::NONE),
            "the uplink without its confirmation"
        );
        let carried = c.extras(INFO);
        assert_eq!(carried.confirm, Some(3));
        // Its attempts ran out: the confirmation is still due, kept across the restart.
        assert!(c.restart_now(&carried));
        let words = c.save();
        let mut after = Commands::restore(&words);
        assert!(after.rebooted_by_command());
        assert_eq!(
            after.extras(INFO),
            Extras {
                confirm: Some(3),
                info: Some(INFO)
            }
        );
        // The gateway sends it again: confirmed, not applied, no restart.
        assert_eq!(
            after.on_ack(&Extras::NONE, reboot),
            Verdict::Again(reboot.unwrap())
        );
        assert!(!after.restart_now(&after.extras(INFO)));
        // A restart for any other reason is not a reboot command's.
        assert!(!Commands::restore(&after.save()).rebooted_by_command());
    }

    #[test]
    fn saved_words_come_back_and_anything_else_is_a_first_start() {
        let mut c = Commands::new();
        for n in [65_535, 1, 2, 300, 4, 5, 6, 7, 8, 9] {
            c.on_ack(&Extras::NONE, command(n, Kind::Ping));
        }
        c.on_ack(&c.extras(INFO), None);
        let restored = Commands::restore(&c.save());
        assert_eq!(restored.save(), c.save());
        assert!([2, 300, 4, 5, 6, 7, 8, 9]
            .iter()
            .all(|n| restored.applied(*n)));
        assert!(!restored.applied(3));
        assert!(!restored.applied(65_535) && !restored.applied(1));
        assert!(restored.info_due(), "the info after every start");
        for k in 0..SAVED_WORDS {
            let mut broken = c.save();
            broken[k] ^= 0x10;
            assert_eq!(Commands::restore(&broken), Commands::new(), "word {k}");
        }
        assert_eq!(Commands::restore(&[0; SAVED_WORDS]), Commands::new());
        assert_eq!(Commands::restore(&[u32::MAX; SAVED_WORDS]), Commands::new());
    }

    #[test]
    fn reset_reasons_from_the_reset_flags() {
        assert_eq!(reset_reason(0, false, false), reset::UNKNOWN);
        assert_eq!(reset_reason(0, false, true), reset::SOFTWARE);
        assert_eq!(
            reset_reason(1 << 28 | 1 << 26, false, false),
            reset::SOFTWARE
        );
        assert_eq!(
            reset_reason(1 << 29 | 1 << 26, false, false),
            reset::WATCHDOG
        );
        assert_eq!(
            reset_reason(1 << 30 | 1 << 26, false, false),
            reset::WATCHDOG
        );
        assert_eq!(
            reset_reason(1 << 27 | 1 << 26, false, false),
            reset::POWER_ON
        );
        assert_eq!(
            reset_reason(1 << 25 | 1 << 26, false, false),
            reset::POWER_ON
        );
        assert_eq!(
            reset_reason(1 << 26, false, false),
            reset::UNKNOWN,
            "the reset pin alone"
        );
        // A panic resets by software: the mark says which. QEMU sets no flag at all.
        assert_eq!(reset_reason(1 << 28 | 1 << 26, true, false), reset::PANIC);
        assert_eq!(reset_reason(0, true, false), reset::PANIC);
        assert_eq!(reset_reason(0, true, true), reset::PANIC);
        // A watchdog reset wins: the mark may be left from before a hang.
        assert_eq!(reset_reason(1 << 29, true, false), reset::WATCHDOG);
    }
}
