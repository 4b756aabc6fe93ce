//! Stored-format compatibility: records written by earlier versions keep loading.
//! `tests/golden/contact_v1.bin` was written by the version-1 contact encoder and must
//! decode, forever, to the contact in `contact_v1.json`.

use contactd::store::decode_legacy_contact;
use serde_json::Value;

#[test]
fn version_1_contact_record_still_decodes() {
    let bytes = include_bytes!("../golden/contact_v1.bin");
    assert_eq!(bytes[0], 1, "the golden file is a version-1 record");
    let expected: Value = serde_json::from_str(include_str!("../golden/contact_v1.json")).unwrap();
    let contact = decode_legacy_contact("default", bytes).unwrap();
    assert_eq!(contact.to_json(), expected);
}
