//! Just enough of Kafka's wire protocol for tests that stand in for a broker (a hostile one, or
//! a proxy in front of the real one): frames, varints, request headers, and FindCoordinator and
//! DescribeGroups answers written by hand.

/// One frame's body (after its 4-byte size).
pub async fn read_frame(stream: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let size = stream.read_i32().await?;
    let mut body = vec![0; size as usize];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// Kafka's unsigned varint, as flexible versions length their strings and arrays.
pub fn varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> u32 {
    let (mut value, mut shift) = (0u32, 0);
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= u32::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return value;
        }
        shift += 7;
    }
}

/// Where a request's body starts: after its key, version, correlation id and client id, and the
/// tagged fields of a flexible header.
fn body_start(request: &[u8], flexible: bool) -> usize {
    let mut at = 8;
    let client_id = i16::from_be_bytes([request[at], request[at + 1]]);
    at += 2 + client_id.max(0) as usize;
    if flexible {
        for _ in 0..read_varint(request, &mut at) {
            read_varint(request, &mut at);
            let size = read_varint(request, &mut at);
            at += size as usize;
        }
    }
    at
}

/// A FindCoordinator v4+ answer naming 127.0.0.1:`port` as the coordinator of every key asked for.
pub fn find_coordinator_answer(request: &[u8], correlation: i32, port: u16) -> Vec<u8> {
    let mut at = body_start(request, true) + 1; // and the key type
    let keys: Vec<Vec<u8>> = (0..read_varint(request, &mut at).saturating_sub(1))
        .map(|_| {
            let length = read_varint(request, &mut at) as usize - 1;
            at += length;
            request[at - length..at].to_vec()
        })
        .collect();
    let mut body = correlation.to_be_bytes().to_vec();
    body.push(0);
    body.extend(0i32.to_be_bytes());
    varint(&mut body, keys.len() as u32 + 1);
    for key in keys {
        varint(&mut body, key.len() as u32 + 1);
        body.extend(key);
        body.extend(1i32.to_be_bytes());
        varint(&mut body, 10);
        body.extend(b"127.0.0.1");
        body.extend(i32::from(port).to_be_bytes());
        body.extend(0i16.to_be_bytes());
        body.push(0);
        body.push(0);
    }
    body.push(0);
    body
}

/// The first group a DescribeGroups request of `version` asks about.
pub fn described_group(request: &[u8], version: i16) -> Vec<u8> {
    let flexible = version >= 5;
    let mut at = body_start(request, flexible);
    if flexible {
        read_varint(request, &mut at);
        let length = read_varint(request, &mut at) as usize - 1;
        request[at..at + length].to_vec()
    } else {
        at += 4;
        let length = i16::from_be_bytes([request[at], request[at + 1]]) as usize;
        request[at + 2..at + 2 + length].to_vec()
    }
}

/// A consumer-protocol member assignment (version 0) of `partitions` partitions of one topic.
pub fn assignment(topic: &[u8], partitions: i32) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0, 0, 0, 1];
    bytes.extend((topic.len() as i16).to_be_bytes());
    bytes.extend(topic);
    bytes.extend(partitions.to_be_bytes());
    bytes.extend((0..partitions).flat_map(i32::to_be_bytes));
    bytes
}

/// A DescribeGroups answer in `version`: `group` Stable, with one member holding `assignment`.
pub fn describe_groups_answer(version: i16, correlation: i32, group: &[u8], assignment: &[u8]) -> Vec<u8> {
    let flexible = version >= 5;
    let string = |out: &mut Vec<u8>, text: &[u8]| {
        if flexible {
            varint(out, text.len() as u32 + 1);
        } else {
            out.extend((text.len() as i16).to_be_bytes());
        }
        out.extend(text);
    };
    let bytes = |out: &mut Vec<u8>, data: &[u8]| {
        if flexible {
            varint(out, data.len() as u32 + 1);
        } else {
            out.extend((data.len() as i32).to_be_bytes());
        }
        out.extend(data);
    };
    let array_of_one = |out: &mut Vec<u8>| {
        if flexible { varint(out, 2) } else { out.extend(1i32.to_be_bytes()) }
    };
    let mut body = correlation.to_be_bytes().to_vec();
    if flexible {
        body.push(0);
    }
    if version >= 1 {
        body.extend(0i32.to_be_bytes());
    }
    array_of_one(&mut body);
    body.extend(0i16.to_be_bytes());
    if version >= 6 {
        body.push(0); // no error message
    }
    string(&mut body, group);
    string(&mut body, b"Stable");
    string(&mut body, b"consumer");
    string(&mut body, b"range");
    array_of_one(&mut body);
    string(&mut body, b"member-1");
    if version >= 4 {
        if flexible { body.push(0) } else { body.extend((-1i16).to_be_bytes()) }
    }
    string(&mut body, b"client-1");
    string(&mut body, b"/10.0.0.1");
    bytes(&mut body, &[]);
    bytes(&mut body, assignment);
    if flexible {
        body.push(0);
    }
    if version >= 3 {
        body.extend(i32::MIN.to_be_bytes());
    }
    if flexible {
        body.push(0);
        body.push(0);
    }
    body
}
