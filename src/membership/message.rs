//! heartbeat's message model: an ordered list of typed fields (`struct ha_msg`).
//!
//! Order is significant (both digests cover the fields in order) and names may repeat
//! (lookups return the first), so this is a list, not a map. See HEARTBEAT-WIRE.md §2.

/// Field types as numbered on the wire (`include/ha_msg.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// `FT_STRING`: printable bytes; almost every field.
    String = 0,
    /// `FT_BINARY`: raw bytes, e.g. `srcuuid`.
    Binary = 1,
    /// `FT_STRUCT`: a nested message body.
    Struct = 2,
    /// `FT_LIST`: packed netstrings.
    List = 3,
    /// `FT_COMPRESS`: a compressed nested message.
    Compress = 4,
    /// `FT_UNCOMPRESS`: in-memory only in heartbeat; carried as-is here.
    Uncompress = 5,
}

impl FieldType {
    /// The wire digit for a type.
    pub fn digit(self) -> u8 {
        self as u8
    }

    /// The type for a wire digit, if it is one.
    pub fn from_digit(d: u8) -> Option<FieldType> {
        Some(match d {
            0 => FieldType::String,
            1 => FieldType::Binary,
            2 => FieldType::Struct,
            3 => FieldType::List,
            4 => FieldType::Compress,
            5 => FieldType::Uncompress,
            _ => return None,
        })
    }
}

/// One `(type, name, value)` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Wire type.
    pub ftype: FieldType,
    /// Name: non-empty, no `=`.
    pub name: String,
    /// Raw value bytes.
    pub value: Vec<u8>,
}

/// An ordered heartbeat message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Fields in wire order.
    pub fields: Vec<Field>,
}

impl Message {
    /// An empty message.
    pub fn new() -> Message {
        Message::default()
    }

    /// A message whose first field is `t=<msg_type>`.
    pub fn with_type(msg_type: &str) -> Message {
        // Room for a heartbeat's own fields plus the envelope, so building one never
        // regrows the list.
        let mut m = Message {
            fields: Vec::with_capacity(16),
        };
        m.add_str("t", msg_type);
        m
    }

    /// Value of the first field called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value.as_slice())
    }

    /// Value of the first field called `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The message type (`t`).
    pub fn msg_type(&self) -> Option<&str> {
        self.get_str("t")
    }

    /// Appends a string field (heartbeat `ha_msg_add`).
    pub fn add_str(&mut self, name: &str, value: &str) {
        self.add(FieldType::String, name, value.as_bytes().to_vec());
    }

    /// Appends a field of any type.
    pub fn add(&mut self, ftype: FieldType, name: &str, value: Vec<u8>) {
        self.fields.push(Field {
            ftype,
            name: name.to_string(),
            value,
        });
    }

    /// Replaces the first field called `name` in place, or appends it (heartbeat `ha_msg_mod`).
    pub fn set(&mut self, ftype: FieldType, name: &str, value: Vec<u8>) {
        match self.fields.iter_mut().find(|f| f.name == name) {
            Some(f) => {
                f.ftype = ftype;
                f.value = value;
            }
            None => self.add(ftype, name, value),
        }
    }

    /// Replaces or appends a string field.
    pub fn set_str(&mut self, name: &str, value: &str) {
        self.set(FieldType::String, name, value.as_bytes().to_vec());
    }

    /// Removes every field called `name`.
    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|f| f.name != name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_in_place_and_get_returns_first() {
        let mut m = Message::with_type("status");
        m.add_str("st", "init");
        m.add_str("st", "second");
        m.set_str("st", "up");
        assert_eq!(m.get_str("st"), Some("up"));
        assert_eq!(m.fields[1].name, "st");
        m.set_str("seq", "1");
        assert_eq!(m.fields.last().unwrap().name, "seq");
        m.remove("st");
        assert_eq!(m.get("st"), None);
    }
}
