package identity

// Reading a certificate's serial without parsing the whole certificate.

import (
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
)

// pemSerial returns the serial number (big.Int.Text(16), as x509 would
// give it) of the first certificate in certPEM. A follower takes every
// certificate the leader issues into service and needs only this of it
// (for logs, the summary and the history): a full x509 parse of each one
// was a third of what following cost. Everything else comes from the
// record the leader wrote; insights parse the certificate on demand.
func pemSerial(certPEM []byte) (string, error) {
	for {
		var block *pem.Block
		block, certPEM = pem.Decode(certPEM)
		if block == nil {
			return "", errors.New("no PEM certificate found")
		}
		if block.Type == "CERTIFICATE" {
			return derSerial(block.Bytes)
		}
	}
}

// certificateHead is a certificate read as far as its serial number;
// encoding/asn1 accepts the elements of a SEQUENCE left after the last
// field (the rest of tbsCertificate, the signature).
type certificateHead struct {
	TBS struct {
		Version int `asn1:"optional,explicit,default:0,tag:0"`
		Serial  *big.Int
	}
}

// derSerial reads a DER certificate's serial number.
func derSerial(der []byte) (string, error) {
	var head certificateHead
	rest, err := asn1.Unmarshal(der, &head)
	if err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	if len(rest) > 0 || head.TBS.Serial == nil {
		return "", errors.New("certificate: malformed DER")
	}
	return head.TBS.Serial.Text(16), nil
}
