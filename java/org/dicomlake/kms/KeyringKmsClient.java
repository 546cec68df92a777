package org.dicomlake.kms;

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.SecureRandom;
import java.util.Arrays;
import java.util.Base64;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;
import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.keytools.KmsClient;

/**
 * Parquet Modular Encryption KMS client for dicomlake lakes: the Java twin of
 * {@code dicomlake.crypto.kms} (pyarrow), producing the same wrapping format.
 *
 * <p>The master key (32 bytes, base64) comes from the Hadoop property {@value #SECRET_PROPERTY},
 * which dicomlake derives from the keyring ({@code Keyring.secret_for("parquet-kms")}; Python:
 * {@code dicomlake.crypto.kms.spark_options(keyring)}). A wrapped key is
 * {@code base64(nonce[12] || AES-256-GCM(master, key, aad = "dicomlake-pme-v1\0" + masterKeyId))}.
 *
 * <p>Use with {@code parquet.crypto.factory.class =
 * org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory} and {@code
 * parquet.encryption.kms.client.class = org.dicomlake.kms.KeyringKmsClient}.
 */
public final class KeyringKmsClient implements KmsClient {
  public static final String SECRET_PROPERTY = "dicomlake.kms.master.secret";
  private static final byte[] AAD_PREFIX = "dicomlake-pme-v1\0".getBytes(StandardCharsets.US_ASCII);
  private static final int NONCE = 12;
  private static final int TAG_BITS = 128;

  private final SecureRandom random = new SecureRandom();
  private SecretKeySpec master;

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
    byte[] key;
    try {
      key = Base64.getDecoder().decode(encoded);
    } catch (IllegalArgumentException e) {
      throw new KeyAccessDeniedException("dicomlake KMS: " + SECRET_PROPERTY + " is not base64");
    }
    if (key.length != 32) {
      throw new KeyAccessDeniedException(
          "dicomlake KMS: " + SECRET_PROPERTY + " must decode to 32 bytes, got " + key.length);
    }
    master = new SecretKeySpec(key, "AES");
  }

  @Override
  public String wrapKey(byte[] keyBytes, String masterKeyIdentifier)
      throws KeyAccessDeniedException {
    byte[] nonce = new byte[NONCE];
    random.nextBytes(nonce);
    try {
      byte[] sealed = cipher(Cipher.ENCRYPT_MODE, nonce, masterKeyIdentifier).doFinal(keyBytes);
      byte[] out = new byte[NONCE + sealed.length];
      System.arraycopy(nonce, 0, out, 0, NONCE);
      System.arraycopy(sealed, 0, out, NONCE, sealed.length);
      return Base64.getEncoder().encodeToString(out);
    } catch (GeneralSecurityException e) {
      throw new KeyAccessDeniedException("dicomlake KMS: wrapping failed", e);
    }
  }

  @Override
  public byte[] unwrapKey(String wrappedKey, String masterKeyIdentifier)
      throws KeyAccessDeniedException {
    try {
      byte[] raw = Base64.getDecoder().decode(wrappedKey);
      if (raw.length <= NONCE) {
        throw new KeyAccessDeniedException("dicomlake KMS: wrapped key too short");
      }
      byte[] nonce = Arrays.copyOfRange(raw, 0, NONCE);
      return cipher(Cipher.DECRYPT_MODE, nonce, masterKeyIdentifier)
          .doFinal(raw, NONCE, raw.length - NONCE);
    } catch (GeneralSecurityException | IllegalArgumentException e) {
      throw new KeyAccessDeniedException(
          "dicomlake KMS: a key wrapped for '" + masterKeyIdentifier + "' did not open: the file "
              + "was written with another keyring's secret, or it was altered",
          e);
    }
  }

  private Cipher cipher(int mode, byte[] nonce, String masterKeyIdentifier)
      throws GeneralSecurityException {
    if (master == null) {
      throw new KeyAccessDeniedException("dicomlake KMS: not initialized");
    }
    byte[] id = masterKeyIdentifier.getBytes(StandardCharsets.UTF_8);
    byte[] aad = new byte[AAD_PREFIX.length + id.length];
    System.arraycopy(AAD_PREFIX, 0, aad, 0, AAD_PREFIX.length);
    System.arraycopy(id, 0, aad, AAD_PREFIX.length, id.length);
    Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
    cipher.init(mode, master, new GCMParameterSpec(TAG_BITS, nonce));
    cipher.updateAAD(aad);
    return cipher;
  }

  @Override
  public String toString() {
    return "KeyringKmsClient(master=<hidden>)";
  }
}
