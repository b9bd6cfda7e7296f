//! A U(S)ART of the STM32F4 (USART2 and UART4 share the register layout): transmit by polling
//! TXE, receive by interrupt. QEMU 7.2 raises no TXE interrupt and at 115200 baud a byte takes
//! 87 µs, so polling costs at most a few ms per line; the receive interrupt keeps the modem's
//! bytes flowing meanwhile (its handler only moves bytes, see `on_interrupt`).

use crate::reg;

const SR: usize = 0x00;
const DR: usize = 0x04;
const BRR: usize = 0x08;
const CR1: usize = 0x0C;

const SR_ORE: u32 = 1 << 3;
const SR_RXNE: u32 = 1 << 5;
const SR_TC: u32 = 1 << 6;
const SR_TXE: u32 = 1 << 7;

const CR1_RE: u32 = 1 << 2;
const CR1_TE: u32 = 1 << 3;
const CR1_RXNEIE: u32 = 1 << 5;
const CR1_UE: u32 = 1 << 13;

/// One U(S)ART, by base address.
#[derive(Clone, Copy)]
pub struct Uart {
    base: usize,
}

impl Uart {
    /// The USART2 (VCP).
    pub const USART2: Uart = Uart { base: reg::USART2 };
    /// The UART4 (modem).
    pub const UART4: Uart = Uart { base: reg::UART4 };

    /// 8N1 at `baud` from a `pclk_hz` bus clock; the receive interrupt on when `rx_interrupt`.
    /// The caller has enabled the peripheral's clock and pins (the board module).
    pub fn enable(self, pclk_hz: u32, baud: u32, rx_interrupt: bool) {
        // Oversampling by 16: BRR = mantissa.fraction = pclk / baud, rounded.
        reg::write(self.base + BRR, (pclk_hz + baud / 2) / baud);
        let rxneie = if rx_interrupt { CR1_RXNEIE } else { 0 };
        reg::write(self.base + CR1, CR1_UE | CR1_TE | CR1_RE | rxneie);
    }

    /// Sends `bytes`, waiting for room before each.
    pub fn write(self, bytes: &[u8]) {
        for &b in bytes {
            while reg::read(self.base + SR) & SR_TXE == 0 {}
            reg::write(self.base + DR, u32::from(b));
        }
    }

    /// Waits until the last byte written has left the wire (TC), a few ms at most: before
    /// a reset, which would cut it.
    pub fn flush(self) {
        for _ in 0..100_000 {
            if reg::read(self.base + SR) & SR_TC != 0 {
                return;
            }
        }
    }

    /// For the receive interrupt: hands every received byte to `sink` and returns how many
    /// overruns it saw (bytes the hardware lost). Reading SR then DR clears RXNE and ORE.
    pub fn on_interrupt(self, mut sink: impl FnMut(u8)) -> u32 {
        let mut overruns = 0;
        loop {
            let sr = reg::read(self.base + SR);
            if sr & (SR_RXNE | SR_ORE) == 0 {
                return overruns;
            }
            let byte = reg::read(self.base + DR) as u8;
            if sr & SR_ORE != 0 {
                overruns += 1;
            }
            if sr & SR_RXNE != 0 {
                sink(byte);
            }
        }
    }
}

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write(s.as_bytes());
        Ok(())
    }
}
