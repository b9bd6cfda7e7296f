//! Node 2, the receiver: frames from Node 1 arrive through the RYLR998 on UART4; each good one
//! is acknowledged and printed as one JSON line on USART2 (the VCP the gateway reads), with
//! Node 2's own SHT3x reading. The rules (CRC, ACK, duplicates, `rx`/`err`) are
//! `lora_link::node2::Receiver`'s; this file only wires tasks to them.
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
    use lora_link::node2::{self, Node2Line, Outcome, Receiver, MAX_LINE};
    use lora_link::packet::MAX_ACK_LEN;
    use rtic_monotonics::systick::prelude::*;
    use sensor_nodes::board;
    use sensor_nodes::modem::{self, Modem, RxSender};
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
        modem.setup(node2::ADDRESS).await;
        let mut receiver = Receiver::new();
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
                    let mut buf = [0u8; MAX_ACK_LEN];
                    if let Ok(n) = ack.encode(&mut buf) {
                        modem.send(to, buf.get(..n).unwrap_or(&[]));
                    }
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
                Outcome::Duplicate { ack, to } => {
                    let mut buf = [0u8; MAX_ACK_LEN];
                    if let Ok(n) = ack.encode(&mut buf) {
                        modem.send(to, buf.get(..n).unwrap_or(&[]));
                    }
                    defmt::info!("seq {} from {} again: acked, not printed", ack.seq_num, to);
                }
                Outcome::Failed(e) => {
                    defmt::warn!(
                        "frame failed ({} so far): {}",
                        receiver.err(),
                        defmt::Debug2Format(&e)
                    );
                }
                Outcome::NotAFrame => {}
            }
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
