//! Generational slot storage for ops in flight, with addresses that never move.
//!
//! Each backend keeps every accepted op in a [`Slab`] from `submit` until its final completion.
//! Two properties make that safe to hand to a kernel:
//!
//! * **Stable addresses.** The slab allocates its full capacity once and never grows past it,
//!   so an entry's fields (timespecs, iovecs, socket addresses the kernel reads) stay put while
//!   the entry lives. A full slab refuses inserts instead of reallocating.
//! * **Generations.** A [`Key`] is an index plus the generation the slot had when it was
//!   filled; removing bumps the generation, so a stale key (a late cancel, an old kernel event)
//!   finds nothing instead of a stranger's op.
#![forbid(unsafe_code)]

/// The most slots a slab may have: indices must fit in 24 bits of a `user_data`.
pub(crate) const CAPACITY_MAX: usize = 1 << 24;

/// A slot index and its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub index: u32,
    pub generation: u32,
}

impl Key {
    /// Packs the key into 56 bits: generation above, 24-bit index below.
    pub fn pack(self) -> u64 {
        (u64::from(self.generation) << 24) | u64::from(self.index)
    }

    /// Unpacks what [`pack`](Self::pack) made (higher bits are ignored).
    pub fn unpack(bits: u64) -> Key {
        Key {
            index: (bits & 0xFF_FFFF) as u32,
            generation: (bits >> 24) as u32,
        }
    }
}

enum Entry<T> {
    Occupied {
        generation: u32,
        value: T,
    },
    Vacant {
        generation: u32,
        next_free: Option<u32>,
    },
}

/// Fixed-capacity generational storage.
pub(crate) struct Slab<T> {
    /// # Invariant
    /// `entries.capacity() >= capacity` from construction on and `entries.len() <= capacity`,
    /// so pushing never reallocates: an occupied entry's address is stable until removed.
    entries: Vec<Entry<T>>,
    capacity: usize,
    free_head: Option<u32>,
    len: usize,
}

impl<T> Slab<T> {
    /// A slab that will hold at most `capacity` values (clamped to [`CAPACITY_MAX`]).
    ///
    /// Reserves the whole capacity now; pages are touched only as slots are first used.
    pub fn with_capacity(capacity: usize) -> Slab<T> {
        let capacity = capacity.clamp(1, CAPACITY_MAX);
        Slab {
            entries: Vec::with_capacity(capacity),
            capacity,
            free_head: None,
            len: 0,
        }
    }

    /// How many values are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most values the slab holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stores `value`; gives it back if the slab is full.
    pub fn insert(&mut self, value: T) -> Result<Key, T> {
        if let Some(index) = self.free_head {
            let entry = &mut self.entries[index as usize];
            let (generation, next_free) = match entry {
                Entry::Vacant {
                    generation,
                    next_free,
                } => (*generation, *next_free),
                Entry::Occupied { .. } => unreachable!("free list points at an occupied slot"),
            };
            *entry = Entry::Occupied { generation, value };
            self.free_head = next_free;
            self.len += 1;
            return Ok(Key { index, generation });
        }
        if self.entries.len() == self.capacity {
            return Err(value);
        }
        let index = self.entries.len() as u32;
        // Within the reserved capacity: no reallocation (see the invariant).
        self.entries.push(Entry::Occupied {
            generation: 0,
            value,
        });
        self.len += 1;
        Ok(Key {
            index,
            generation: 0,
        })
    }

    /// The value under `key`, if that exact generation is stored.
    pub fn get(&self, key: Key) -> Option<&T> {
        match self.entries.get(key.index as usize)? {
            Entry::Occupied { generation, value } if *generation == key.generation => Some(value),
            _ => None,
        }
    }

    /// The value under `key`, writable.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.entries.get_mut(key.index as usize)? {
            Entry::Occupied { generation, value } if *generation == key.generation => Some(value),
            _ => None,
        }
    }

    /// Removes and returns the value under `key`; the slot's generation moves on.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let entry = self.entries.get_mut(key.index as usize)?;
        match entry {
            Entry::Occupied { generation, .. } if *generation == key.generation => {}
            _ => return None,
        }
        let next = Entry::Vacant {
            generation: key.generation.wrapping_add(1),
            next_free: self.free_head,
        };
        let Entry::Occupied { value, .. } = std::mem::replace(entry, next) else {
            unreachable!("checked occupied above")
        };
        self.free_head = Some(key.index);
        self.len -= 1;
        Some(value)
    }

    /// Every stored key and value.
    /// Removes `key`'s value, handing it to `f` in place first (to take what the caller needs
    /// without moving the whole value out); `None` if the key is stale.
    pub fn remove_with<R>(&mut self, key: Key, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let entry = self.entries.get_mut(key.index as usize)?;
        let taken = match entry {
            Entry::Occupied { generation, value } if *generation == key.generation => f(value),
            _ => return None,
        };
        *entry = Entry::Vacant {
            generation: key.generation.wrapping_add(1),
            next_free: self.free_head,
        };
        self.free_head = Some(key.index);
        self.len -= 1;
        Some(taken)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Key, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Entry::Occupied { generation, value } => Some((
                    Key {
                        index: i as u32,
                        generation: *generation,
                    },
                    value,
                )),
                Entry::Vacant { .. } => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_find_nothing() {
        let mut slab = Slab::with_capacity(2);
        let a = slab.insert("a").unwrap();
        assert_eq!(slab.remove(a), Some("a"));
        let b = slab.insert("b").unwrap();
        assert_eq!(b.index, a.index, "the slot is reused");
        assert_ne!(b.generation, a.generation);
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.get(b), Some(&"b"));
    }

    #[test]
    fn full_slab_refuses_and_never_moves() {
        let mut slab = Slab::with_capacity(3);
        let keys: Vec<Key> = (0..3).map(|i| slab.insert(i).unwrap()).collect();
        let addr = slab.get(keys[0]).unwrap() as *const i32;
        assert_eq!(slab.insert(9), Err(9));
        slab.remove(keys[1]);
        let k = slab.insert(7).unwrap();
        assert_eq!(k.index, keys[1].index);
        assert_eq!(slab.get(keys[0]).unwrap() as *const i32, addr);
        assert_eq!(slab.len(), 3);
    }

    #[test]
    fn keys_pack_round_trip() {
        let k = Key {
            index: 0xAB_CDEF,
            generation: 0xDEAD_BEEF,
        };
        assert_eq!(Key::unpack(k.pack()), k);
        assert!(k.pack() < 1 << 56);
    }
}
