//! Memory-mapped register access by address: the only `unsafe` of the peripheral drivers.
//! Addresses come from the STM32F446 reference manual (RM0390); QEMU's STM32F405 puts USART2,
//! UART4, RCC and the GPIO ports at the same addresses.

/// RCC: clock enables.
pub const RCC: usize = 0x4002_3800;
/// RCC_AHB1ENR (GPIO port clocks).
pub const RCC_AHB1ENR: usize = RCC + 0x30;
/// RCC_APB1ENR (USART2, UART4, I2C1 clocks).
pub const RCC_APB1ENR: usize = RCC + 0x40;
/// RCC_CSR (reset flags; RMVF clears them).
pub const RCC_CSR: usize = RCC + 0x74;
/// GPIO port A.
pub const GPIOA: usize = 0x4002_0000;
/// GPIO port B.
#[cfg_attr(feature = "qemu", allow(dead_code))]
pub const GPIOB: usize = 0x4002_0400;
/// USART2: the Nucleo's ST-Link virtual COM port.
pub const USART2: usize = 0x4000_4400;
/// UART4: the RYLR998 modem.
pub const UART4: usize = 0x4000_4C00;
/// I2C1: the sensors.
#[cfg_attr(feature = "qemu", allow(dead_code))]
pub const I2C1: usize = 0x4000_5400;

/// Reads the 32-bit register at `addr`.
#[inline(always)]
pub fn read(addr: usize) -> u32 {
    // SAFETY: callers pass the address of a peripheral register of this chip (constants
    // above plus offsets from RM0390); a volatile read of it has no memory-safety effect.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// Writes the 32-bit register at `addr`.
#[inline(always)]
pub fn write(addr: usize, value: u32) {
    // SAFETY: as for `read`: a peripheral register, not memory Rust owns.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

/// Read-modify-write: clears `clear`, then sets `set`.
#[inline(always)]
pub fn modify(addr: usize, clear: u32, set: u32) {
    write(addr, (read(addr) & !clear) | set);
}

/// Puts pin `pin` of GPIO `port` in alternate function `af`; open drain with pull-up when
/// `open_drain` (I2C), push-pull otherwise.
#[cfg_attr(feature = "qemu", allow(dead_code))]
pub fn gpio_alternate(port: usize, pin: u32, af: u32, open_drain: bool) {
    let two = pin * 2;
    modify(port, 0b11 << two, 0b10 << two); // MODER: alternate
    modify(port + 0x08, 0b11 << two, 0b10 << two); // OSPEEDR: fast
    if open_drain {
        modify(port + 0x04, 0, 1 << pin); // OTYPER: open drain
        modify(port + 0x0C, 0b11 << two, 0b01 << two); // PUPDR: pull-up
    }
    let (afr, shift) = if pin < 8 {
        (port + 0x20, pin * 4)
    } else {
        (port + 0x24, (pin - 8) * 4)
    };
    modify(afr, 0xF << shift, af << shift);
}
