//! Node 1, the sensor node: every uplink interval (`SEND_PERIOD_MS` until an `interval`
//! command sets another, kept across resets and power loss) it reads its BME680 and sends the
//! packet to Node 2 (address 2) through the RYLR998 on UART4 as a secure frame (sealed with
//! its key and the next frame counter, whose reservation is stored first: `counter_store`),
//! waits `ACK_TIMEOUT_MS` for Node 2's sealed ACK and sends the same frame again on a timeout
//! or a NACK, 4 sends at most; then the next packet takes the next seq and counter whatever
//! happened. The ACK may carry a command (`interval`, `ping`, `identify`, `reboot`: the
//! rules of `lora_link::node1::commands`); the next uplink goes at once and confirms it (the
//! slots go on from there), and so do the following ones until one is acknowledged; the
//! first uplink after every boot and the next after a `ping` carry the node's info. The rules are
//! `lora_link::node1`'s; this file only wires tasks to them.
//!
//! On USART2 (the VCP) it prints one line per event: `sent seq=<n> try=<k> counter=<c>`,
//! `acked seq=<n>`, `nack seq=<n>`, `gave up seq=<n>`, `not sent seq=<n>: counter not
//! stored` when the counter store failed, `command number=<n> kind=<kind> value=<v> applied`
//! (or `again (not applied)`), `interval now <ms> ms` and `rebooting`.
//!
//! Tasks: the UART4 interrupt (priority 3) queues the modem's bytes; `radio` (priority 1)
//! does the rest (a BME680 read blocks ~200 ms; only the interrupt needs to run meanwhile),
//! and blinks the LED for `identify` in its waits between uplinks.

#![no_std]
#![no_main]

use defmt_rtt as _;
// Release builds reset on a panic (`sensor_nodes::recovery`); debug builds stop for a debugger.
#[cfg(debug_assertions)]
use panic_probe as _;

#[rtic::app(device = stm32f4::stm32f446, dispatchers = [EXTI0])]
mod app {
    use lora_link::downlink::{Extras, Kind, NodeCommand, NodeInfo};
    use lora_link::modem::Event;
    use lora_link::node1::commands::{self, Commands, Verdict, SAVED_WORDS};
    use lora_link::node1::{self, Answer, Counter, CounterError, Transmission};
    use lora_link::node2;
    use lora_link::packet::SensorDataPacket;
    use lora_link::secure::{self, MAX_UPLINK_LEN};
    use lora_link::vcp::{kind_name, kind_value};
    use rtic_monotonics::systick::prelude::*;
    use sensor_nodes::board;
    use sensor_nodes::counter_store::CounterStore;
    use sensor_nodes::kept;
    use sensor_nodes::keys::NODE1_KEY;
    use sensor_nodes::modem::{self, print_line, Modem, RxSender};
    use sensor_nodes::recovery;
    use sensor_nodes::sensor::Sensor;
    use sensor_nodes::stack::PeakWatch;
    use sensor_nodes::time::Mono;
    use sensor_nodes::uart::Uart;

    use sensor_nodes::VERSION;

    type Instant = <Mono as Timebase>::Instant;

    /// How fast `identify` blinks: the LED changes this often, ms.
    const BLINK_MS: u32 = 250;
    /// The longest a loop of `radio` takes, sleep aside: the modem's set-up (5 commands, 3
    /// tries of 1 s each), a sensor read and 4 sends with their ACK timeouts, with room to
    /// spare. The watchdog resets the node when a loop takes longer (`recovery`).
    const EXCHANGE_BUDGET_S: u32 = 60;

    #[shared]
    struct Shared {}

    #[local]
    struct Local {
        rx_queue: RxSender,
        modem: Modem,
        sensor: board::AirSensor,
        store: CounterStore,
        node: Node,
    }

    /// What Node 1 knows of itself: its commands, its info, its uplink interval.
    struct Node {
        commands: Commands,
        boots: u32,
        reset: u8,
        interval_ms: u32,
        /// Seconds since boot, counted past the 32-bit clock's wrap (`info` runs at every
        /// uplink slot, far more often than every 24 days).
        uptime_s: u32,
        /// The instant up to which `uptime_s` counts.
        clock: Instant,
        /// `identify` blinks the LED until then.
        identify_until: Option<Instant>,
    }

    impl Node {
        fn info(&mut self) -> NodeInfo {
            let now = Mono::now();
            let ms = now
                .checked_duration_since(self.clock)
                .map_or(0, |d| d.as_millis());
            self.uptime_s = self.uptime_s.saturating_add(ms / 1000);
            // The clock moves on by whole seconds only: the rest counts next time.
            self.clock = now
                .checked_sub_duration::<1, 1000>((ms % 1000).millis())
                .unwrap_or(now);
            NodeInfo {
                version: VERSION,
                boots: self.boots,
                uptime_s: self.uptime_s,
                reset: self.reset,
            }
        }

        /// Keeps the command state across a reset.
        fn keep(&self) {
            kept::save(kept::COMMANDS, &self.commands.save());
        }
    }

    #[idle]
    fn idle(_: idle::Context) -> ! {
        sensor_nodes::sleep_between_interrupts()
    }

    #[init]
    fn init(cx: init::Context) -> (Shared, Local) {
        let (modem, rx_queue) = sensor_nodes::start(cx.core.SYST, false);
        board::led_init();
        let mut store = CounterStore::open(cx.device.FLASH);
        let (boots, counted) = store.count_boot();
        if let Err(e) = counted {
            defmt::error!("boot count not stored: {}", e);
        }
        let commands = Commands::restore(&kept::load::<SAVED_WORDS>(kept::COMMANDS));
        let reset = commands::reset_reason(
            board::take_reset_flags(),
            recovery::take_panicked(),
            commands.rebooted_by_command(),
        );
        let interval_ms = store
            .interval()
            .map_or(board::SEND_PERIOD_MS, |s| s.saturating_mul(1000));
        let node = Node {
            commands,
            boots,
            reset,
            interval_ms,
            uptime_s: 0,
            clock: Mono::now(),
            identify_until: None,
        };
        node.keep();
        defmt::info!(
            "node1 on {=str}, counter reservation stored: {}, boot {} (reset {}), interval {} ms",
            board::NAME,
            store.stored(),
            boots,
            reset,
            interval_ms
        );
        // The first uplink's exchange, the modem's set-up included, comes well within this.
        recovery::start_watchdog(0, EXCHANGE_BUDGET_S);
        radio::spawn().ok();
        watchdog::spawn().ok();
        (
            Shared {},
            Local {
                rx_queue,
                modem,
                sensor: board::air_sensor(),
                store,
                node,
            },
        )
    }

    /// Feeds the watchdog once a second while `radio` keeps its promise
    /// (`recovery::alive_until`); at the lowest priority, so a task that spins stops it too.
    #[task(priority = 1)]
    async fn watchdog(_: watchdog::Context) {
        loop {
            recovery::feed_if_alive(seconds_since_boot());
            Mono::delay(1000.millis()).await;
        }
    }

    fn seconds_since_boot() -> u32 {
        Mono::now().duration_since_epoch().as_secs()
    }

    /// Moves the modem's bytes into the queue; nothing else.
    #[task(binds = UART4, priority = 3, local = [rx_queue])]
    fn uart4(cx: uart4::Context) {
        modem::on_receive_interrupt(Uart::UART4, cx.local.rx_queue);
    }

    #[task(priority = 1, local = [modem, sensor, store, node])]
    async fn radio(cx: radio::Context) {
        let (modem, sensor, store, node) = (
            cx.local.modem,
            cx.local.sensor,
            cx.local.store,
            cx.local.node,
        );
        recovery::self_test_start("node1", node.boots, node.reset);
        recovery::self_test_modem(modem.setup(node1::ADDRESS).await);
        Mono::delay(board::FIRST_SEND_DELAY_MS.millis()).await;
        let mut first_read = true;
        let mut seq = node1::FIRST_SEQ;
        let mut counter = Counter::resume(store.stored());
        let mut next = Mono::now();
        // This uplink goes right after the one before, to confirm a command at once.
        let mut at_once = false;
        let mut stack = PeakWatch::default();
        loop {
            recovery::alive_until(seconds_since_boot().saturating_add(EXCHANGE_BUDGET_S));
            if modem.take_restarted() {
                print_line(Uart::USART2, format_args!("modem restarted: set-up again"));
                modem.setup(node1::ADDRESS).await;
            }
            let info = node.info();
            let mut confirm_at_once = false;
            let read = sensor.read();
            if core::mem::take(&mut first_read) {
                recovery::self_test_sensor(board::AIR_SENSOR, read.map(|_| ()));
            }
            match read {
                Ok(air) => {
                    let packet = SensorDataPacket {
                        seq_num: seq,
                        temperature: air.temperature,
                        humidity: air.humidity,
                        gas_resistance: air.gas_resistance,
                    };
                    // Nothing is sent with a counter whose reservation is not stored.
                    match counter.next(|r| store.store(r)) {
                        Ok(c) => {
                            let extras = node.commands.extras(info);
                            let acked = deliver(modem, &packet, c, &extras).await;
                            seq = node1::next_seq(seq);
                            if let Some(command) = acked {
                                let verdict = node.commands.on_ack(&extras, command);
                                confirm_at_once = commands::confirm_at_once(verdict, at_once);
                                apply(verdict, node, store);
                            }
                            restart_if_due(node, &extras);
                        }
                        Err(CounterError::Store(e)) => {
                            defmt::error!("counter reservation not stored: {}", e);
                            print_line(
                                Uart::USART2,
                                format_args!("not sent seq={seq}: counter not stored"),
                            );
                        }
                        Err(CounterError::Exhausted) => {
                            defmt::error!("every frame counter is used: Node 1 needs a new key");
                        }
                    }
                }
                // Nothing sent, no seq used: a gap in seq always means a lost packet.
                Err(e) => defmt::warn!("bme680 read failed: {}", e),
            }
            // The next slot: now to confirm a command at once (the slots go on from there);
            // after a late exchange, now too (no burst to catch up).
            next += node.interval_ms.millis();
            let now = Mono::now();
            if next < now || confirm_at_once {
                next = now;
            }
            at_once = confirm_at_once;
            if let Some(peak) = stack.grew() {
                let statics = sensor_nodes::stack::static_ram();
                print_line(
                    Uart::USART2,
                    format_args!("stack peak={peak} static={statics}"),
                );
            }
            let wake_s = next.duration_since_epoch().as_secs();
            recovery::alive_until(wake_s.saturating_add(EXCHANGE_BUDGET_S));
            sleep_until(next, &mut node.identify_until).await;
        }
    }

    /// Waits until `next`, blinking the LED meanwhile while `identify` lasts (it pauses
    /// during an exchange with Node 2, which takes milliseconds unless ACKs are lost).
    async fn sleep_until(next: Instant, identify_until: &mut Option<Instant>) {
        let mut on = false;
        loop {
            let now = Mono::now();
            let blink = match *identify_until {
                Some(end) if now < end => now.checked_add_duration::<1, 1000>(BLINK_MS.millis()),
                _ => None,
            };
            on = blink.is_some() && !on;
            board::led(on);
            if blink.is_none() {
                *identify_until = None;
            }
            let wake = blink.map_or(next, |b| b.min(next));
            Mono::delay_until(wake).await;
            if wake == next {
                return;
            }
        }
    }

    /// Applies a command the ACK carried (`verdict` of `Commands::on_ack`), with its VCP
    /// lines; a `reboot` waits for its confirmation (`restart_if_due`).
    fn apply(verdict: Verdict, node: &mut Node, store: &mut CounterStore) {
        let (command, applied) = match verdict {
            Verdict::Nothing => return,
            Verdict::Apply(c) => (c, true),
            Verdict::Again(c) => (c, false),
        };
        let vcp = Uart::USART2;
        let what = if applied {
            "applied"
        } else {
            "again (not applied)"
        };
        print_line(
            vcp,
            format_args!(
                "command number={} kind={} value={} {what}",
                command.number,
                kind_name(command.kind),
                kind_value(command.kind)
            ),
        );
        node.keep();
        if !applied {
            return;
        }
        match command.kind {
            Kind::Interval(seconds) => {
                node.interval_ms = seconds.saturating_mul(1000);
                if let Err(e) = store.set_interval(seconds) {
                    defmt::error!("interval not stored: {}", e);
                }
                print_line(vcp, format_args!("interval now {} ms", node.interval_ms));
            }
            Kind::Identify(seconds) => {
                node.identify_until = Mono::now().checked_add_duration::<1, 1>(seconds.secs());
            }
            Kind::Ping | Kind::Reboot => {}
        }
    }

    /// After an uplink that carried `sent`: restarts when it carried a `reboot`'s
    /// confirmation, once the command state is kept.
    fn restart_if_due(node: &mut Node, sent: &Extras) {
        let now = node.commands.restart_now(sent);
        node.keep();
        if now {
            print_line(Uart::USART2, format_args!("rebooting"));
            Uart::USART2.flush();
            cortex_m::peripheral::SCB::sys_reset();
        }
    }

    /// What ended a wait for Node 2's answer.
    enum Heard {
        /// A frame that answers the one in flight (never `Unrelated`), with its command.
        Answer(Answer, Option<NodeCommand>),
        /// The modem refused the `AT+SEND` (`+ERR=<code>`): nothing went on the air.
        SendFailed(u16),
        /// The modem restarted (`+READY`) and lost its settings.
        ModemRestarted,
    }

    /// Sends `packet` with `extras`, sealed with `counter`, until Node 2 acknowledges it or
    /// the attempts run out; every attempt sends the same bytes. `Some` with the command the
    /// ACK carried (if any) when acknowledged; `None` when given up.
    async fn deliver(
        modem: &mut Modem,
        packet: &SensorDataPacket,
        counter: u32,
        extras: &Extras,
    ) -> Option<Option<NodeCommand>> {
        let vcp = Uart::USART2;
        let seq = packet.seq_num;
        let mut frame = [0u8; MAX_UPLINK_LEN];
        let key = &NODE1_KEY;
        let Ok(n) =
            secure::seal_uplink_with(key, node1::ADDRESS, counter, packet, extras, &mut frame)
        else {
            defmt::error!("frame of seq {} not built", seq);
            return None;
        };
        let frame = frame.get(..n).unwrap_or(&[]);
        let mut transmission = Transmission::new(seq);
        while let Some(attempt) = transmission.next_attempt() {
            modem.send(node2::ADDRESS, frame);
            print_line(
                vcp,
                format_args!("sent seq={seq} try={attempt} counter={counter}"),
            );
            let heard = Mono::timeout_after(board::ACK_TIMEOUT_MS.millis(), async {
                loop {
                    let heard = modem
                        .next_event(|e| match e {
                            Event::Frame(f) => {
                                let (answer, command) =
                                    transmission.answer_with_command(key, counter, &f);
                                (answer != Answer::Unrelated)
                                    .then_some(Heard::Answer(answer, command))
                            }
                            Event::Error(code) => Some(Heard::SendFailed(code)),
                            Event::Ready => Some(Heard::ModemRestarted),
                            _ => None,
                        })
                        .await;
                    if let Some(heard) = heard {
                        return heard;
                    }
                }
            })
            .await;
            match heard {
                Ok(Heard::Answer(Answer::Ack, command)) => {
                    print_line(vcp, format_args!("acked seq={seq}"));
                    return Some(command);
                }
                Ok(Heard::Answer(_, _)) => print_line(vcp, format_args!("nack seq={seq}")),
                // Not sent: again at once (the next attempt), not after the ACK timeout.
                Ok(Heard::SendFailed(code)) => {
                    print_line(vcp, format_args!("send failed seq={seq} error={code}"));
                    defmt::warn!("AT+SEND -> +ERR={}", code);
                }
                // It lost its settings: set it up again before the next attempt.
                Ok(Heard::ModemRestarted) => {
                    print_line(vcp, format_args!("modem restarted: set-up again"));
                    modem.setup(node1::ADDRESS).await;
                }
                Err(_) => {}
            }
        }
        print_line(vcp, format_args!("gave up seq={seq}"));
        None
    }
}
