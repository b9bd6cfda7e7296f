//! Node 2, the receiver: frames from the nodes arrive through the RYLR998 on UART4; each one
//! the node table (`keys`, built in) allows is acknowledged and printed as one JSON line on
//! USART2 (the VCP the gateway reads), with Node 2's own SHT3x reading. The rules (secure
//! frames and legacy ones, sealed ACKs, repeats and replays, `rx`/`err`) are
//! `lora_link::node2::Receiver`'s; this file only wires tasks to them.
//!
//! Each refused frame is one line on the VCP too, `rejected from=<address> reason=<reason>
//! count=<n>` (n: refusals for that reason since boot), and a `+RCV` line that broke is
//! `rejected reason=broken count=<n>`. At start-up, each node of the table that is not secure
//! gets a line: `warning: node <address> is legacy: its frames are accepted unauthenticated`
//! or `warning: node <address> has no key: its frames are refused`. After a `+READY` (the modem
//! restarted and lost its settings) it sets the modem up again and says `modem restarted:
//! set-up again`; an ACK the modem refused (`+ERR`) is sent again at once, at most
//! `ACK_SENDS` times in all, each refusal a line `ack send failed to=<address> error=<code>
//! try=<n>`. At start-up it reports itself like a node's info: `info from=2 version=<v>
//! boots=<starts since power-up> uptime=0 reset=<reason>` (`lora_link::vcp`). The gateway's
//! serial source skips the lines that are not JSON without a word (no JSON fragment).
//!
//! Commands to the nodes (`docs/PROTOCOL.md`, "Downlink"): the gateway writes `cmd <address>
//! <number> <kind> [<value>]` lines to USART2; Node 2 keeps the newest per node and puts it
//! in the ACK of that node's next new uplink, until the node confirms it. It answers each
//! line (`command queued ...` or `command refused ...`) and reports `command sent ...`,
//! `confirmed from=<address> number=<n>` and the nodes' `info from=<address> ...` lines
//! (`lora_link::vcp`), which the gateway's JSON decoder skips like the lines above.
//!
//! Tasks: the UART4 interrupt (priority 3) queues the modem's bytes and the USART2 interrupt
//! (priority 3) the gateway's; `radio` (priority 2) sets the modem up, parses, acknowledges
//! and prints; `commands` (priority 2, so that lines never interleave) reads the gateway's
//! lines; `climate` (priority 1) reads the SHT3x every 500 ms into the shared `climate` (a
//! failed read clears it: no stale value).

#![no_std]
#![no_main]

use defmt_rtt as _;
// Release builds reset on a panic (`sensor_nodes::recovery`); debug builds stop for a debugger.
#[cfg(debug_assertions)]
use panic_probe as _;

#[rtic::app(device = stm32f4::stm32f446, dispatchers = [EXTI0, EXTI1])]
mod app {
    use lora_link::downlink::NodeInfo;
    use lora_link::modem::Event;
    use lora_link::node1::commands::reset_reason;
    use lora_link::node2::AckFrame;
    use lora_link::node2::{self, Node2Line, Outcome, Peer, Receiver, MAX_LINE};
    use lora_link::vcp::{self, LineBuffer, Pushed, Refusal, Report, MAX_COMMAND_LINE};
    use rtic_monotonics::systick::prelude::*;
    use sensor_nodes::board;
    use sensor_nodes::keys::NODES;
    use sensor_nodes::modem::{self, print_line, Modem, RxReceiver, RxSender};
    use sensor_nodes::sensor::{Climate, Sensor, SensorError};
    use sensor_nodes::stack::PeakWatch;
    use sensor_nodes::time::Mono;
    use sensor_nodes::uart::Uart;
    use sensor_nodes::{kept, recovery, VERSION};

    type Table = Receiver<'static, { NODES.len() }>;

    #[shared]
    struct Shared {
        /// The last SHT3x reading, `None` until one succeeded and after a failed one.
        climate: Option<Climate>,
        /// The receive rules' state, the commands waiting for their nodes' uplinks included.
        receiver: Table,
    }

    #[local]
    struct Local {
        rx_queue: RxSender,
        modem: Modem,
        sensor: board::ClimateSensor,
        /// The gateway's bytes, queued as the modem's are (the same queue type: one copy of
        /// its code).
        vcp_queue: RxSender,
        vcp_rx: RxReceiver,
    }

    /// Sends of one ACK at most: the first and 2 more after a `+ERR` (Node 1 waits 1 s under
    /// QEMU, 2 s on the board; each send is answered within milliseconds).
    const ACK_SENDS: u8 = 3;
    /// The climate loop's promise to the watchdog: back within this, s (it runs every 0.5 s).
    const CLIMATE_BUDGET_S: u32 = 10;

    #[idle]
    fn idle(_: idle::Context) -> ! {
        sensor_nodes::sleep_between_interrupts()
    }

    #[init]
    fn init(cx: init::Context) -> (Shared, Local) {
        let (modem, rx_queue) = sensor_nodes::start(cx.core.SYST, true);
        let (vcp_queue, vcp_rx) = rtic_sync::make_channel!(u8, { modem::RX_QUEUE });
        let reset = reset_reason(board::take_reset_flags(), recovery::take_panicked(), false);
        let boots = count_boot();
        defmt::info!(
            "node2 on {=str}, boot {} (reset {})",
            board::NAME,
            boots,
            reset
        );
        recovery::start_watchdog(0, CLIMATE_BUDGET_S);
        radio::spawn(NodeInfo {
            version: VERSION,
            boots,
            uptime_s: 0,
            reset,
        })
        .ok();
        watchdog::spawn().ok();
        commands::spawn().ok();
        climate::spawn().ok();
        (
            Shared {
                climate: None,
                receiver: Receiver::new(&NODES),
            },
            Local {
                rx_queue,
                modem,
                sensor: board::climate_sensor(),
                vcp_queue,
                vcp_rx,
            },
        )
    }

    /// Starts since power-up, in kept RAM with a check word (a power-up leaves anything
    /// there, which does not pass for a count): 1 after a power-up.
    fn count_boot() -> u32 {
        let [boots, check] = kept::load::<2>(kept::BOOTS);
        let boots = if check == !boots {
            boots.saturating_add(1)
        } else {
            1
        };
        kept::save(kept::BOOTS, &[boots, !boots]);
        boots
    }

    /// Feeds the watchdog once a second while `climate` keeps its promise
    /// (`recovery::alive_until`); at the lowest priority, so a task that spins stops it too.
    #[task(priority = 1)]
    async fn watchdog(_: watchdog::Context) {
        loop {
            recovery::feed_if_alive(Mono::now().duration_since_epoch().as_secs());
            Mono::delay(1000.millis()).await;
        }
    }

    /// Moves the modem's bytes into the queue; nothing else.
    #[task(binds = UART4, priority = 3, local = [rx_queue])]
    fn uart4(cx: uart4::Context) {
        modem::on_receive_interrupt(Uart::UART4, cx.local.rx_queue);
    }

    /// Moves the gateway's bytes into their queue; nothing else (a full queue drops them:
    /// the line breaks and is refused).
    #[task(binds = USART2, priority = 3, local = [vcp_queue])]
    fn usart2(cx: usart2::Context) {
        modem::on_receive_interrupt(Uart::USART2, cx.local.vcp_queue);
    }

    /// The gateway's `cmd` lines: each queued for its node, or refused; one line back.
    #[task(priority = 2, shared = [receiver], local = [vcp_rx])]
    async fn commands(mut cx: commands::Context) {
        let mut lines = LineBuffer::<MAX_COMMAND_LINE>::new();
        while let Ok(byte) = cx.local.vcp_rx.recv().await {
            let report = match lines.push(byte) {
                Pushed::More | Pushed::Line([]) => continue,
                Pushed::TooLong => Report::Refused {
                    command: None,
                    reason: Refusal::BadLine,
                },
                Pushed::Line(line) => match vcp::parse_command(line) {
                    None => Report::Refused {
                        command: None,
                        reason: Refusal::BadLine,
                    },
                    Some((to, command)) => {
                        let number = command.number;
                        match cx.shared.receiver.lock(|r| r.queue(to, command)) {
                            Ok(()) => Report::Queued { to, number },
                            Err(reason) => Report::Refused {
                                command: Some((to, number)),
                                reason,
                            },
                        }
                    }
                },
            };
            print_line(Uart::USART2, format_args!("{report}"));
        }
    }

    #[task(priority = 2, shared = [climate, receiver], local = [modem])]
    async fn radio(mut cx: radio::Context, info: NodeInfo) {
        let modem = cx.local.modem;
        warn_about_the_table();
        print_line(
            Uart::USART2,
            format_args!(
                "{}",
                Report::Info {
                    from: node2::ADDRESS,
                    info
                }
            ),
        );
        recovery::self_test_start("node2", info.boots, info.reset);
        recovery::self_test_modem(modem.setup(node2::ADDRESS).await);
        // The climate task read the SHT3x meanwhile (the set-up waits on the modem).
        let first = cx.shared.climate.lock(|c| c.is_some());
        let read = if first { Ok(()) } else { Err(SensorError::Bus) };
        recovery::self_test_sensor(board::CLIMATE_SENSOR, read);
        // The ACK last sent, until the modem's `+OK`, and its sends so far.
        let mut ack_in_flight: Option<(u16, AckFrame, u8)> = None;
        let mut stack = PeakWatch::default();
        loop {
            if modem.take_restarted() {
                print_line(Uart::USART2, format_args!("modem restarted: set-up again"));
                modem.setup(node2::ADDRESS).await;
                ack_in_flight = None;
            }
            let receiver = &mut cx.shared.receiver;
            // The outcome, with the counts its lines show (one lock), and the modem's reply
            // to a command if it was one.
            let (outcome, rx, err, count, reply) = modem
                .next_event(|e| {
                    let reply = match e {
                        Event::Ok => Some(Ok(())),
                        Event::Error(code) => Some(Err(code)),
                        _ => None,
                    };
                    receiver.lock(|r| {
                        let outcome = r.on_event(&e);
                        let count = match outcome {
                            Outcome::Rejected { reason, .. } => r.rejected(reason),
                            Outcome::Broken => r.broken(),
                            _ => 0,
                        };
                        (outcome, r.rx(), r.err(), count, reply)
                    })
                })
                .await;
            match (reply, ack_in_flight) {
                (Some(Ok(())), _) => ack_in_flight = None,
                (Some(Err(code)), Some((to, ack, sends))) => {
                    print_line(
                        Uart::USART2,
                        format_args!("ack send failed to={to} error={code} try={sends}"),
                    );
                    ack_in_flight = (sends < ACK_SENDS).then(|| {
                        modem.send(to, ack.as_bytes());
                        (to, ack, sends + 1)
                    });
                }
                _ => {}
            }
            match outcome {
                Outcome::New {
                    packet,
                    ack,
                    to,
                    rssi,
                    snr,
                    command,
                    confirmed,
                    info,
                } => {
                    modem.send(to, ack.as_bytes());
                    ack_in_flight = Some((to, ack, 1));
                    let climate = cx.shared.climate.lock(|c| *c);
                    let line = Node2Line {
                        ts: Mono::now().duration_since_epoch().as_millis(),
                        n1: packet,
                        n2_temperature: climate.map(|c| c.temperature),
                        n2_humidity: climate.map(|c| c.humidity),
                        rssi,
                        snr,
                        rx,
                        err,
                    };
                    let mut text = [0u8; MAX_LINE];
                    let Ok(n) = node2::write_line(&line, &mut text) else {
                        defmt::error!("JSON line too long");
                        continue;
                    };
                    let text = text.get(..n).unwrap_or(&[]);
                    Uart::USART2.write(text);
                    Uart::USART2.write(b"\r\n");
                    defmt::info!(
                        "JSON sent via VCP: {=str}",
                        core::str::from_utf8(text).unwrap_or("")
                    );
                    report_downlink(to, command, confirmed, info);
                    if let Some(peak) = stack.grew() {
                        let statics = sensor_nodes::stack::static_ram();
                        print_line(
                            Uart::USART2,
                            format_args!("stack peak={peak} static={statics}"),
                        );
                    }
                }
                Outcome::Duplicate { ack, to, seq } => {
                    modem.send(to, ack.as_bytes());
                    ack_in_flight = Some((to, ack, 1));
                    defmt::info!("seq {} from {} again: acked, not printed", seq, to);
                }
                Outcome::Rejected { from, reason } => {
                    print_line(
                        Uart::USART2,
                        format_args!(
                            "rejected from={from} reason={} count={count}",
                            reason.as_str()
                        ),
                    );
                    defmt::warn!(
                        "frame from {} rejected: {=str} ({} so far)",
                        from,
                        reason.as_str(),
                        count
                    );
                }
                Outcome::Broken => {
                    print_line(
                        Uart::USART2,
                        format_args!("rejected reason=broken count={count}"),
                    );
                    defmt::warn!("+RCV line broken ({} so far)", count);
                }
                Outcome::NotAFrame => {}
            }
        }
    }

    /// The downlink's lines about a new uplink from `to`: the command its ACK carries, the
    /// confirmation and the info it carried.
    fn report_downlink(
        to: u16,
        command: Option<u16>,
        confirmed: Option<u16>,
        info: Option<lora_link::downlink::NodeInfo>,
    ) {
        let print = |report: Report| print_line(Uart::USART2, format_args!("{report}"));
        if let Some(number) = command {
            print(Report::Sent { to, number });
        }
        if let Some(number) = confirmed {
            print(Report::Confirmed { from: to, number });
        }
        if let Some(info) = info {
            print(Report::Info { from: to, info });
        }
    }

    /// One VCP line per node of the table that is not secure: a legacy node (its frames are
    /// accepted unauthenticated) or a node without a key (its frames are refused).
    fn warn_about_the_table() {
        for node in NODES.iter() {
            let what = match node.peer {
                Peer::Keyed(_) => continue,
                Peer::Legacy => "is legacy: its frames are accepted unauthenticated",
                Peer::NoKey => "has no key: its frames are refused",
            };
            print_line(
                Uart::USART2,
                format_args!("warning: node {} {what}", node.address),
            );
            defmt::warn!("node {} {=str}", node.address, what);
        }
    }

    #[task(priority = 1, shared = [climate], local = [sensor])]
    async fn climate(mut cx: climate::Context) {
        let mut next = Mono::now();
        loop {
            let reading = cx.local.sensor.read();
            if let Err(e) = reading {
                defmt::warn!("sht3x read failed: {}", e);
            }
            cx.shared.climate.lock(|c| *c = reading.ok());
            let now_s = Mono::now().duration_since_epoch().as_secs();
            recovery::alive_until(now_s.saturating_add(CLIMATE_BUDGET_S));
            next += board::CLIMATE_PERIOD_MS.millis();
            Mono::delay_until(next).await;
        }
    }
}
