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
//! or `warning: node <address> has no key: its frames are refused`. The gateway's serial
//! source skips such lines without a word (not JSON, no JSON fragment).
//!
//! Tasks: the UART4 interrupt (priority 3) queues the modem's bytes; `radio` (priority 2)
//! sets the modem up, parses, acknowledges and prints; `climate` (priority 1) reads the
//! SHT3x every 500 ms into the shared `climate` (a failed read clears it: no stale value).

#![no_std]
#![no_main]

use defmt_rtt as _;
use panic_probe as _;

#[rtic::app(device = stm32f4::stm32f446, dispatchers = [EXTI0, EXTI1])]
mod app {
    use lora_link::node2::{self, Node2Line, Outcome, Peer, Receiver, MAX_LINE};
    use rtic_monotonics::systick::prelude::*;
    use sensor_nodes::board;
    use sensor_nodes::keys::NODES;
    use sensor_nodes::modem::{self, print_line, Modem, RxSender};
    use sensor_nodes::sensor::{Climate, Sensor};
    use sensor_nodes::time::Mono;
    use sensor_nodes::uart::Uart;

    #[shared]
    struct Shared {
        /// The last SHT3x reading, `None` until one succeeded and after a failed one.
        climate: Option<Climate>,
    }

    #[local]
    struct Local {
        rx_queue: RxSender,
        modem: Modem,
        sensor: board::ClimateSensor,
    }

    #[idle]
    fn idle(_: idle::Context) -> ! {
        sensor_nodes::sleep_between_interrupts()
    }

    #[init]
    fn init(cx: init::Context) -> (Shared, Local) {
        let (modem, rx_queue) = sensor_nodes::start(cx.core.SYST);
        defmt::info!("node2 on {=str}", board::NAME);
        radio::spawn().ok();
        climate::spawn().ok();
        (
            Shared { climate: None },
            Local {
                rx_queue,
                modem,
                sensor: board::climate_sensor(),
            },
        )
    }

    /// Moves the modem's bytes into the queue; nothing else.
    #[task(binds = UART4, priority = 3, local = [rx_queue])]
    fn uart4(cx: uart4::Context) {
        modem::on_receive_interrupt(cx.local.rx_queue);
    }

    #[task(priority = 2, shared = [climate], local = [modem])]
    async fn radio(mut cx: radio::Context) {
        let modem = cx.local.modem;
        warn_about_the_table();
        modem.setup(node2::ADDRESS).await;
        let mut receiver = Receiver::new(&NODES);
        loop {
            let outcome = modem.next_event(|e| receiver.on_event(&e)).await;
            match outcome {
                Outcome::New {
                    packet,
                    ack,
                    to,
                    rssi,
                    snr,
                } => {
                    modem.send(to, ack.as_bytes());
                    let climate = cx.shared.climate.lock(|c| *c);
                    let line = Node2Line {
                        ts: Mono::now().duration_since_epoch().as_millis(),
                        n1: packet,
                        n2_temperature: climate.map(|c| c.temperature),
                        n2_humidity: climate.map(|c| c.humidity),
                        rssi,
                        snr,
                        rx: receiver.rx(),
                        err: receiver.err(),
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
                }
                Outcome::Duplicate { ack, to, seq } => {
                    modem.send(to, ack.as_bytes());
                    defmt::info!("seq {} from {} again: acked, not printed", seq, to);
                }
                Outcome::Rejected { from, reason } => {
                    let count = receiver.rejected(reason);
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
                    let count = receiver.broken();
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
            next += board::CLIMATE_PERIOD_MS.millis();
            Mono::delay_until(next).await;
        }
    }
}
