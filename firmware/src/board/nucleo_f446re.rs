//! Nucleo-F446RE (STM32F446RET6), running on its 16 MHz HSI (the reset clock: no PLL set-up,
//! 16 MHz is plenty for two UARTs and an I2C bus).
//!
//! Wiring (Nucleo-64 Arduino header names; alternate functions from the STM32F446 datasheet):
//! - USART2: PA2 TX / PA3 RX (AF7), the ST-Link's virtual COM port (on-board, nothing to wire).
//! - UART4: PA0 TX (A0) / PA1 RX (A1) (AF8) to the RYLR998's RXD / TXD, 3.3 V logic.
//! - I2C1: PB8 SCL (D15) / PB9 SDA (D14) (AF4, open drain, internal pull-ups enabled; the
//!   sensor breakouts carry their own) to the sensor: Node 1's BME680 at 0x77, Node 2's SHT3x
//!   at 0x44.

use crate::i2c::I2c1;
use crate::reg;
use crate::sensor::bme680::{Bme680, Sdo};
use crate::sensor::sht3x::Sht3x;

/// The board's name, as in the image file names.
pub const NAME: &str = "nucleo-f446re";
/// Core clock (HSI).
pub const CPU_HZ: u32 = 16_000_000;
/// SysTick's clock (the core clock).
pub const SYSTICK_HZ: u32 = CPU_HZ;
/// APB1 clock (USART2, UART4, I2C1): HSI, no prescaler.
pub const PCLK1_HZ: u32 = CPU_HZ;

/// Node 1 sends one packet this often, ms.
pub const SEND_PERIOD_MS: u32 = 10_000;
/// Node 1's first packet comes this long after the modem set-up, ms.
pub const FIRST_SEND_DELAY_MS: u32 = 1_000;
/// Node 1 waits this long for an ACK before sending again, ms (the original's 2 s).
pub const ACK_TIMEOUT_MS: u32 = 2_000;
/// Node 1's BME680 address (SDO high; 0x76 with SDO low).
pub const BME680_SDO: Sdo = Sdo::High;

/// The sensors as the self-test names them, with where they should answer.
pub const AIR_SENSOR: &str = "BME680 on I2C1 (PB8 SCL, PB9 SDA) at 0x77 (chip id 0x61 checked)";
/// See [`AIR_SENSOR`].
pub const CLIMATE_SENSOR: &str = "SHT3x on I2C1 (PB8 SCL, PB9 SDA) at 0x44 (CRC checked)";

/// Node 2's SHT3x.
pub type ClimateSensor = Sht3x<I2c1>;
/// Node 1's BME680.
pub type AirSensor = Bme680<I2c1>;

/// Clocks and pins of USART2, UART4 and I2C1.
pub fn init() {
    reg::modify(reg::RCC_AHB1ENR, 0, 0b11); // GPIOA, GPIOB
    reg::modify(reg::RCC_APB1ENR, 0, (1 << 17) | (1 << 19) | (1 << 21)); // USART2, UART4, I2C1
    let _ = reg::read(reg::RCC_APB1ENR); // two cycles before the peripherals are used
    reg::gpio_alternate(reg::GPIOA, 2, 7, false);
    reg::gpio_alternate(reg::GPIOA, 3, 7, false);
    reg::gpio_alternate(reg::GPIOA, 0, 8, false);
    reg::gpio_alternate(reg::GPIOA, 1, 8, false);
    reg::gpio_alternate(reg::GPIOB, 8, 4, true);
    reg::gpio_alternate(reg::GPIOB, 9, 4, true);
}

/// Node 2's SHT3x on I2C1.
pub fn climate_sensor() -> ClimateSensor {
    Sht3x::new(I2c1::new(PCLK1_HZ), CPU_HZ)
}

/// Node 1's BME680 on I2C1.
pub fn air_sensor() -> AirSensor {
    Bme680::new(I2c1::new(PCLK1_HZ), BME680_SDO, CPU_HZ)
}

/// The emulator image's fault injection (`board::qemu::inject_fault`); nothing on the board.
pub fn inject_fault(_what: &str) {}
