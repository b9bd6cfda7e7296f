//! CRC-16/IBM-3740 (also known as CRC-16/CCITT-FALSE): polynomial 0x1021, initial value
//! 0xFFFF, no reflection, no final XOR. Check value: `crc16(b"123456789") == 0x29B1`.

/// One entry per byte value, computed at compile time.
const TABLE: [u16; 256] = table();

#[allow(clippy::indexing_slicing)] // const fn, i < 256: checked at compile time
const fn table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// The CRC of `data`.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0xFFFF, |crc: u16, &b| {
        let index = usize::from((crc >> 8) as u8 ^ b);
        (crc << 8) ^ TABLE.get(index).copied().unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_of_the_catalogue() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
        assert_eq!(crc16(b""), 0xFFFF);
    }

    #[test]
    fn the_table_matches_the_bitwise_definition() {
        fn bitwise(data: &[u8]) -> u16 {
            let mut crc = 0xFFFFu16;
            for &b in data {
                crc ^= u16::from(b) << 8;
                for _ in 0..8 {
                    crc = if crc & 0x8000 != 0 {
                        (crc << 1) ^ 0x1021
                    } else {
                        crc << 1
                    };
                }
            }
            crc
        }
        let data: [u8; 256] = core::array::from_fn(|i| i as u8);
        for n in 0..=data.len() {
            assert_eq!(crc16(&data[..n]), bitwise(&data[..n]), "{n} bytes");
        }
    }
}
