//! Node 1, the sensor node: every `SEND_PERIOD_MS` it reads its BME680 and sends the packet
//! to Node 2 (address 2) through the RYLR998 on UART4 as a secure frame (sealed with its key
//! and the next frame counter, whose reservation is stored first: `counter_store`), waits
//! `ACK_TIMEOUT_MS` for Node 2's sealed ACK and sends the same frame again on a timeout or a
//! NACK, 4 sends at most; then the next packet takes the next seq and counter whatever
//! happened. The rules are `lora_link::node1`'s; this file only wires tasks to them.
//!
//! On USART2 (the VCP) it prints one line per event: `sent seq=<n> try=<k> counter=<c>`,
//! `acked seq=<n>`, `nack seq=<n>`, `gave up seq=<n>`, and `not sent seq=<n>: counter not
//! stored` when the counter store failed.
//!
//! Tasks: the UART4 interrupt (priority 3) queues the modem's bytes; `radio` (priority 1)
//! does the rest (a BME680 read blocks ~200 ms; only the interrupt needs to run meanwhile).

#![no_std]
#![no_main]

use defmt_rtt as _;
use panic_probe as _;

#[rtic::app(device = stm32f4::stm32f446, dispatchers = [EXTI0])]
mod app {
    use lora_link::modem::Event;
    use lora_link::node1::{self, Answer, Counter, CounterError, Transmission};
    use lora_link::node2;
    use lora_link::packet::SensorDataPacket;
    use lora_link::secure::{self, MAX_UPLINK_LEN};
    use rtic_monotonics::systick::prelude::*;
    use sensor_nodes::board;
    use sensor_nodes::counter_store::CounterStore;
    use sensor_nodes::keys::NODE1_KEY;
    use sensor_nodes::modem::{self, print_line, Modem, RxSender};
    use sensor_nodes::sensor::Sensor;
    use sensor_nodes::time::Mono;
    use sensor_nodes::uart::Uart;

    #[shared]
    struct Shared {}

    #[local]
    struct Local {
        rx_queue: RxSender,
        modem: Modem,
        sensor: board::AirSensor,
        store: CounterStore,
    }

    #[idle]
    fn idle(_: idle::Context) -> ! {
        sensor_nodes::sleep_between_interrupts()
    }

    #[init]
    fn init(cx: init::Context) -> (Shared, Local) {
        let (modem, rx_queue) = sensor_nodes::start(cx.core.SYST);
        let store = CounterStore::open(cx.device.FLASH);
        defmt::info!(
            "node1 on {=str}, counter reservation stored: {}",
            board::NAME,
            store.stored()
        );
        radio::spawn().ok();
        (
            Shared {},
            Local {
                rx_queue,
                modem,
                sensor: board::air_sensor(),
                store,
            },
        )
    }

    /// Moves the modem's bytes into the queue; nothing else.
    #[task(binds = UART4, priority = 3, local = [rx_queue])]
    fn uart4(cx: uart4::Context) {
        modem::on_receive_interrupt(cx.local.rx_queue);
    }

    #[task(priority = 1, local = [modem, sensor, store])]
    async fn radio(cx: radio::Context) {
        let (modem, sensor, store) = (cx.local.modem, cx.local.sensor, cx.local.store);
        modem.setup(node1::ADDRESS).await;
        Mono::delay(board::FIRST_SEND_DELAY_MS.millis()).await;
        let mut seq = node1::FIRST_SEQ;
        let mut counter = Counter::resume(store.stored());
        let mut next = Mono::now();
        loop {
            match sensor.read() {
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
                            deliver(modem, &packet, c).await;
                            seq = node1::next_seq(seq);
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
            // The next slot; after a late exchange, now (no burst to catch up).
            next += board::SEND_PERIOD_MS.millis();
            let now = Mono::now();
            if next < now {
                next = now;
            }
            Mono::delay_until(next).await;
        }
    }

    /// Sends `packet`, sealed with `counter`, until Node 2 acknowledges it or the attempts run
    /// out; every attempt sends the same bytes.
    async fn deliver(modem: &mut Modem, packet: &SensorDataPacket, counter: u32) {
        let vcp = Uart::USART2;
        let seq = packet.seq_num;
        let mut frame = [0u8; MAX_UPLINK_LEN];
        let Ok(n) = secure::seal_uplink(&NODE1_KEY, node1::ADDRESS, counter, packet, &mut frame)
        else {
            defmt::error!("frame of seq {} not built", seq);
            return;
        };
        let frame = frame.get(..n).unwrap_or(&[]);
        let mut transmission = Transmission::new(seq);
        while let Some(attempt) = transmission.next_attempt() {
            modem.send(node2::ADDRESS, frame);
            print_line(
                vcp,
                format_args!("sent seq={seq} try={attempt} counter={counter}"),
            );
            let answer = Mono::timeout_after(board::ACK_TIMEOUT_MS.millis(), async {
                loop {
                    let answer = modem
                        .next_event(|e| match e {
                            Event::Frame(f) => transmission.answer_sealed(&NODE1_KEY, counter, &f),
                            Event::Error(code) => {
                                defmt::warn!("AT+SEND -> +ERR={}", code);
                                Answer::Unrelated
                            }
                            _ => Answer::Unrelated,
                        })
                        .await;
                    if answer != Answer::Unrelated {
                        return answer;
                    }
                }
            })
            .await;
            match answer {
                Ok(Answer::Ack) => {
                    print_line(vcp, format_args!("acked seq={seq}"));
                    return;
                }
                Ok(Answer::Nack) => print_line(vcp, format_args!("nack seq={seq}")),
                Ok(Answer::Unrelated) | Err(_) => {}
            }
        }
        print_line(vcp, format_args!("gave up seq={seq}"));
    }
}
