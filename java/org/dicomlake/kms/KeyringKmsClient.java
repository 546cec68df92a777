package org.dicomlake.kms;

import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.SecureRandom;
import java.security.interfaces.XECPublicKey;
import java.security.spec.NamedParameterSpec;
import java.security.spec.XECPrivateKeySpec;
import java.security.spec.XECPublicKeySpec;
import java.util.Arrays;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;
import javax.crypto.Cipher;
import javax.crypto.KeyAgreement;
import javax.crypto.Mac;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;
import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.keytools.KmsClient;

/**
 * Parquet Modular Encryption KMS client for dicomlake lakes: the Java twin of {@code
 * dicomlake.crypto.kms} (pyarrow), producing and reading the same wrapping format.
 *
 * <p>The keyring's KEKs come from the Hadoop property {@value #SECRET_PROPERTY}, as {@code
 * dicomlake.crypto.kms.spark_options(keyring)} writes it: {@code
 * mode;active;legacy;id,key,public;...} (base64 fields, empty when absent). A wrapped key is
 * {@code "k1:" + kekId + ":" + base64(Keyring.wrap(key, "dicomlake-pme\0" + masterKeyId))}:
 *
 * <ul>
 *   <li>symmetric: {@code nonce[12] || AES-256-GCM(kek, key, aad)};
 *   <li>x25519: {@code ephemeral[32] || nonce[12] || AES-256-GCM(k, key, aad)}, {@code k =
 *       HKDF-SHA256(X25519(ephemeral, kek), salt = ephemeral || kekPublic, info =
 *       "dicomlake-x25519-wrap-v1\0" + kekId + "\0" + context)};
 * </ul>
 *
 * with {@code aad = "dicomlake-wrap-v1\0" + kekId + "\0" + context}. A public-only keyring wraps
 * but cannot unwrap. Older files ({@code base64(nonce || AES-256-GCM(legacy, key, aad =
 * "dicomlake-pme-v1\0" + masterKeyId))}) open only with a keyring that can unwrap.
 *
 * <p>Use with {@code parquet.crypto.factory.class =
 * org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory} and {@code
 * parquet.encryption.kms.client.class = org.dicomlake.kms.KeyringKmsClient}.
 */
public final class KeyringKmsClient implements KmsClient {
  public static final String SECRET_PROPERTY = "dicomlake.kms.keyring.secret";
  private static final String PREFIX = "k1:";
  private static final byte[] CONTEXT = ascii("dicomlake-pme\0");
  private static final byte[] WRAP_AAD = ascii("dicomlake-wrap-v1\0");
  private static final byte[] X25519_INFO = ascii("dicomlake-x25519-wrap-v1\0");
  private static final byte[] LEGACY_AAD = ascii("dicomlake-pme-v1\0");
  private static final int KEY = 32;
  private static final int NONCE = 12;
  private static final int TAG_BITS = 128;

  /** One KEK: its secret (AES key or raw X25519 private key; null if public-only), public. */
  private record Kek(byte[] secret, byte[] publicKey) {}

  private final SecureRandom random = new SecureRandom();
  private final Map<String, Kek> keks = new HashMap<>();
  private boolean x25519;
  private String active;
  private byte[] legacy;

  @Override
  public void initialize(
      Configuration configuration, String kmsInstanceID, String kmsInstanceURL, String accessToken)
      throws KeyAccessDeniedException {
    String encoded = configuration.getTrimmed(SECRET_PROPERTY);
    if (encoded == null || encoded.isEmpty()) {
      throw new KeyAccessDeniedException(
          "dicomlake KMS: Hadoop property " + SECRET_PROPERTY + " is not set; pass "
              + "dicomlake.crypto.kms.spark_options(keyring) as reader options");
    }
    String[] parts = encoded.split(";", -1);
    if (parts.length < 4) {
      throw new KeyAccessDeniedException("dicomlake KMS: " + SECRET_PROPERTY + " is malformed");
    }
    x25519 = "x25519".equals(parts[0]);
    active = parts[1];
    legacy = decode(parts[2]);
    for (int i = 3; i < parts.length; i++) {
      String[] kek = parts[i].split(",", -1);
      if (kek.length != 3) {
        throw new KeyAccessDeniedException("dicomlake KMS: KEK #" + (i - 3) + " is malformed");
      }
      keks.put(kek[0], new Kek(decode(kek[1]), decode(kek[2])));
    }
    if (!keks.containsKey(active)) {
      throw new KeyAccessDeniedException("dicomlake KMS: the active KEK " + active + " is absent");
    }
  }

  @Override
  public String wrapKey(byte[] keyBytes, String masterKeyIdentifier)
      throws KeyAccessDeniedException {
    Kek kek = keks.get(active);
    byte[] context = concat(CONTEXT, utf8(masterKeyIdentifier));
    byte[] aad = concat(WRAP_AAD, utf8(active), new byte[1], context);
    byte[] nonce = new byte[NONCE];
    random.nextBytes(nonce);
    try {
      byte[] out;
      if (x25519) {
        KeyPair ephemeral = KeyPairGenerator.getInstance("X25519").generateKeyPair();
        byte[] ephemeralPublic = rawPublic((XECPublicKey) ephemeral.getPublic());
        byte[] shared = agree(ephemeral.getPrivate(), kek.publicKey());
        byte[] key = x25519Key(shared, ephemeralPublic, kek.publicKey(), active, context);
        out = concat(ephemeralPublic, nonce, aesGcm(Cipher.ENCRYPT_MODE, key, nonce, aad, keyBytes));
      } else {
        out = concat(nonce, aesGcm(Cipher.ENCRYPT_MODE, kek.secret(), nonce, aad, keyBytes));
      }
      return PREFIX + active + ":" + Base64.getEncoder().encodeToString(out);
    } catch (GeneralSecurityException e) {
      throw new KeyAccessDeniedException("dicomlake KMS: wrapping failed", e);
    }
  }

  @Override
  public byte[] unwrapKey(String wrappedKey, String masterKeyIdentifier)
      throws KeyAccessDeniedException {
    if (!wrappedKey.startsWith(PREFIX)) {
      return unwrapLegacy(wrappedKey, masterKeyIdentifier);
    }
    String rest = wrappedKey.substring(PREFIX.length());
    int colon = rest.indexOf(':');
    String kekId = colon < 0 ? rest : rest.substring(0, colon);
    Kek kek = keks.get(kekId);
    if (kek == null) {
      throw new KeyAccessDeniedException(
          "dicomlake KMS: KEK " + kekId + " is not in this keyring (rotated out, or another "
              + "keyring)");
    }
    if (kek.secret() == null) {
      throw new KeyAccessDeniedException(
          "dicomlake KMS: this keyring holds only the public half of " + kekId + ": reading "
              + "the restricted table needs the full keyring with the private key");
    }
    byte[] context = concat(CONTEXT, utf8(masterKeyIdentifier));
    byte[] aad = concat(WRAP_AAD, utf8(kekId), new byte[1], context);
    try {
      byte[] raw = Base64.getDecoder().decode(rest.substring(colon + 1));
      if (x25519) {
        byte[] ephemeralPublic = Arrays.copyOfRange(raw, 0, KEY);
        byte[] nonce = Arrays.copyOfRange(raw, KEY, KEY + NONCE);
        byte[] shared = agree(privateKey(kek.secret()), ephemeralPublic);
        byte[] key = x25519Key(shared, ephemeralPublic, kek.publicKey(), kekId, context);
        return aesGcm(
            Cipher.DECRYPT_MODE, key, nonce, aad, Arrays.copyOfRange(raw, KEY + NONCE, raw.length));
      }
      byte[] nonce = Arrays.copyOfRange(raw, 0, NONCE);
      return aesGcm(
          Cipher.DECRYPT_MODE, kek.secret(), nonce, aad, Arrays.copyOfRange(raw, NONCE, raw.length));
    } catch (GeneralSecurityException | IllegalArgumentException | IndexOutOfBoundsException e) {
      throw new KeyAccessDeniedException(
          "dicomlake KMS: a key wrapped for '" + masterKeyIdentifier + "' did not open: it "
              + "was altered, or it belongs to another keyring",
          e);
    }
  }

  private byte[] unwrapLegacy(String wrappedKey, String masterKeyIdentifier)
      throws KeyAccessDeniedException {
    if (legacy == null) {
      throw new KeyAccessDeniedException(
          "dicomlake KMS: this keyring holds only public keys: reading the restricted table "
              + "needs the full keyring");
    }
    try {
      byte[] raw = Base64.getDecoder().decode(wrappedKey);
      byte[] aad = concat(LEGACY_AAD, utf8(masterKeyIdentifier));
      return aesGcm(
          Cipher.DECRYPT_MODE,
          legacy,
          Arrays.copyOfRange(raw, 0, NONCE),
          aad,
          Arrays.copyOfRange(raw, NONCE, raw.length));
    } catch (GeneralSecurityException | IllegalArgumentException | IndexOutOfBoundsException e) {
      throw new KeyAccessDeniedException(
          "dicomlake KMS: a key wrapped for '" + masterKeyIdentifier + "' did not open: the "
              + "file was written with another keyring's secret, or it was altered",
          e);
    }
  }

  private static byte[] aesGcm(int mode, byte[] key, byte[] nonce, byte[] aad, byte[] data)
      throws GeneralSecurityException {
    Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
    cipher.init(mode, new SecretKeySpec(key, "AES"), new GCMParameterSpec(TAG_BITS, nonce));
    cipher.updateAAD(aad);
    return cipher.doFinal(data);
  }

  private static byte[] x25519Key(
      byte[] shared, byte[] ephemeral, byte[] recipient, String kekId, byte[] context)
      throws GeneralSecurityException {
    // HKDF-SHA256 (RFC 5869) for one 32-byte block: extract, then expand with counter 1.
    Mac mac = Mac.getInstance("HmacSHA256");
    mac.init(new SecretKeySpec(concat(ephemeral, recipient), "HmacSHA256"));
    byte[] prk = mac.doFinal(shared);
    mac.init(new SecretKeySpec(prk, "HmacSHA256"));
    return mac.doFinal(concat(X25519_INFO, utf8(kekId), new byte[1], context, new byte[] {1}));
  }

  private static byte[] agree(PrivateKey mine, byte[] theirRawPublic)
      throws GeneralSecurityException {
    KeyAgreement agreement = KeyAgreement.getInstance("XDH");
    agreement.init(mine);
    agreement.doPhase(publicKey(theirRawPublic), true);
    return agreement.generateSecret();
  }

  private static PrivateKey privateKey(byte[] raw) throws GeneralSecurityException {
    return KeyFactory.getInstance("XDH")
        .generatePrivate(new XECPrivateKeySpec(NamedParameterSpec.X25519, raw));
  }

  private static PublicKey publicKey(byte[] raw) throws GeneralSecurityException {
    // RFC 7748: the u-coordinate is little-endian, its top bit ignored.
    byte[] bigEndian = new byte[KEY];
    for (int i = 0; i < KEY; i++) {
      bigEndian[i] = raw[KEY - 1 - i];
    }
    bigEndian[0] &= 0x7f;
    return KeyFactory.getInstance("XDH")
        .generatePublic(
            new XECPublicKeySpec(NamedParameterSpec.X25519, new BigInteger(1, bigEndian)));
  }

  private static byte[] rawPublic(XECPublicKey key) {
    byte[] bigEndian = key.getU().toByteArray();
    byte[] raw = new byte[KEY];
    for (int i = 0; i < KEY && i < bigEndian.length; i++) {
      raw[i] = bigEndian[bigEndian.length - 1 - i];
    }
    return raw;
  }

  private static byte[] decode(String field) throws KeyAccessDeniedException {
    if (field.isEmpty()) {
      return null;
    }
    try {
      return Base64.getDecoder().decode(field);
    } catch (IllegalArgumentException e) {
      throw new KeyAccessDeniedException("dicomlake KMS: " + SECRET_PROPERTY + " is not base64");
    }
  }

  private static byte[] concat(byte[]... parts) {
    int length = 0;
    for (byte[] part : parts) {
      length += part.length;
    }
    byte[] out = new byte[length];
    int at = 0;
    for (byte[] part : parts) {
      System.arraycopy(part, 0, out, at, part.length);
      at += part.length;
    }
    return out;
  }

  private static byte[] ascii(String text) {
    return text.getBytes(StandardCharsets.US_ASCII);
  }

  private static byte[] utf8(String text) {
    return text.getBytes(StandardCharsets.UTF_8);
  }

  @Override
  public String toString() {
    return "KeyringKmsClient(keks=" + keks.keySet() + ", active=" + active + ")";
  }
}
